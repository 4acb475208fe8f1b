package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.time.Duration;
import java.util.Map;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Scheduler;
import reactor.core.scheduler.Schedulers;

/**
 * {@link RecordSink} over the plain {@link KafkaProducer}, without reactor-kafka.
 *
 * <pre>{@code
 * RecordSink sink = KafkaProducerSink.create(Map.of("bootstrap.servers", "localhost:9092"), 1024);
 * }</pre>
 *
 * <p>{@code KafkaProducer.send} may block (waiting for metadata or buffer space, up to {@code
 * max.block.ms}), so it runs on one dedicated thread where blocking is allowed; acknowledgements
 * arrive on the producer's I/O thread. One thread keeps the send order, so records with the
 * same key keep their order. Same producer defaults as {@link ReactorKafkaSink}. Thread-safe.
 */
public final class KafkaProducerSink implements RecordSink {
  private final Producer<String, byte[]> producer;
  private final int maxInFlight;
  private final Scheduler sendThread;

  private KafkaProducerSink(Producer<String, byte[]> producer, int maxInFlight) {
    this.producer = producer;
    this.maxInFlight = maxInFlight;
    this.sendThread = Schedulers.newBoundedElastic(1, Integer.MAX_VALUE, "outbox-kafka-send");
  }

  /**
   * @param producerProperties Kafka producer settings, at least {@code bootstrap.servers}
   * @param maxInFlight records sent and not yet acknowledged, at most
   */
  public static KafkaProducerSink create(Map<String, Object> producerProperties, int maxInFlight) {
    if (maxInFlight < 1) {
      throw new InvalidConfigurationException(
          "maxInFlight must be >= 1, got " + maxInFlight);
    }
    return new KafkaProducerSink(
        new KafkaProducer<>(KafkaRecords.producerProperties(
            KafkaRecords.validated(producerProperties))), maxInFlight);
  }

  @Override
  public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
    return Flux.from(records).flatMap(record -> Mono.<SendResult<T>>create(result -> {
      SendGuard guard = SendGuard.of(record.correlation());
      if (guard != null && guard.sendAbandoned()) {
        result.success(new SendResult<>(record.correlation(),
            new SendGuard.EarlierRecordFailedException()));
        return;
      }
      try {
        producer.send(KafkaRecords.toProducerRecord(record), (metadata, error) -> {
          if (error != null && guard != null) {
            guard.sendFailed();
          }
          result.success(new SendResult<>(record.correlation(), error));
        });
      } catch (RuntimeException error) { // closed producer, interrupted, serializer failure
        if (guard != null) {
          guard.sendFailed();
        }
        result.success(new SendResult<>(record.correlation(), error));
      }
    }).subscribeOn(sendThread), maxInFlight);
  }

  @Override
  public Mono<Void> close() {
    return Mono.<Void>fromRunnable(() -> producer.close(Duration.ofSeconds(30)))
        .subscribeOn(Schedulers.boundedElastic())
        .doFinally(signal -> sendThread.dispose());
  }

  /** Yes: see the class description. */
  @Override
  public boolean checksSendGuard() {
    return true;
  }
}
