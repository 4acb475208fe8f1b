package dev.outbox.relay;

import java.util.Map;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Schedulers;
import reactor.kafka.sender.KafkaSender;
import reactor.kafka.sender.SenderOptions;
import reactor.kafka.sender.SenderRecord;

/**
 * {@link RecordSink} over reactor-kafka's {@link KafkaSender}, the relay's default.
 *
 * <pre>{@code
 * RecordSink sink = ReactorKafkaSink.create(Map.of("bootstrap.servers", "localhost:9092"), 1024);
 * }</pre>
 *
 * <p>Producer defaults (overridable): String keys, byte[] values, {@code enable.idempotence=true},
 * {@code acks=all}, {@code linger.ms=5}. reactor-kafka 1.3.25 is its last release; {@link
 * KafkaProducerSink} is the drop-in alternative. Thread-safe.
 */
public final class ReactorKafkaSink implements RecordSink {
  private final KafkaSender<String, byte[]> sender;

  private ReactorKafkaSink(KafkaSender<String, byte[]> sender) {
    this.sender = sender;
  }

  /**
   * @param producerProperties Kafka producer settings, at least {@code bootstrap.servers}
   * @param maxInFlight records sent and not yet acknowledged, at most
   */
  public static ReactorKafkaSink create(Map<String, Object> producerProperties, int maxInFlight) {
    if (maxInFlight < 1) {
      throw new dev.outbox.r2dbc.InvalidConfigurationException(
          "maxInFlight must be >= 1, got " + maxInFlight);
    }
    SenderOptions<String, byte[]> options = SenderOptions
        .<String, byte[]>create(KafkaRecords.producerProperties(producerProperties))
        .maxInFlight(maxInFlight)
        .stopOnError(false);
    return new ReactorKafkaSink(KafkaSender.create(options));
  }

  @Override
  public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
    return sender
        .send(Flux.from(records)
            .map(r -> SenderRecord.create(KafkaRecords.toProducerRecord(r), r.correlation())))
        .map(result -> new SendResult<>(result.correlationMetadata(), result.exception()));
  }

  @Override
  public Mono<Void> close() {
    // KafkaSender.close() waits for the producer to flush: keep it off non-blocking threads.
    return Mono.<Void>fromRunnable(sender::close).subscribeOn(Schedulers.boundedElastic());
  }
}
