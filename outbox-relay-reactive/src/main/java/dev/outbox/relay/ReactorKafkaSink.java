package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.time.Duration;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Map;
import java.util.Set;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.jspecify.annotations.Nullable;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.publisher.Sinks;
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
  /** Errors remembered per {@code send} to recognise reactor-kafka's terminal repeat of one. */
  static final int ANSWERED_ERRORS_KEPT = 64;

  private final KafkaSender<String, byte[]> sender;
  private final int maxRequestSize;

  private ReactorKafkaSink(KafkaSender<String, byte[]> sender, int maxRequestSize) {
    this.sender = sender;
    this.maxRequestSize = maxRequestSize;
  }

  /**
   * @param producerProperties Kafka producer settings, at least {@code bootstrap.servers}
   * @param maxInFlight records sent and not yet acknowledged, at most
   */
  public static ReactorKafkaSink create(Map<String, Object> producerProperties, int maxInFlight) {
    if (maxInFlight < 1) {
      throw new InvalidConfigurationException(
          "maxInFlight must be >= 1, got " + maxInFlight);
    }
    Map<String, Object> props = KafkaRecords.producerProperties(
        KafkaRecords.validated(producerProperties));
    SenderOptions<String, byte[]> options = SenderOptions.<String, byte[]>create(props)
        .maxInFlight(maxInFlight)
        .stopOnError(false)
        .closeTimeout(Duration.ofSeconds(10));
    int maxRequestSize = KafkaRecords.maxRequestSize(props);
    return new ReactorKafkaSink(KafkaSender.create(GuardedProducer.FACTORY, options),
        maxRequestSize);
  }

  /**
   * reactor-kafka ends the whole send Flux when {@code KafkaProducer.send} rejects a record
   * before sending it, instead of failing that record alone. The two such rejections the relay
   * can meet, an illegal topic name and a record over {@code max.request.size}, are therefore
   * checked here first and answered with the same exceptions the producer would raise; those
   * records never reach the producer.
   */
  @Override
  public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
    return Flux.defer(() -> {
      Sinks.Many<SendResult<T>> rejected = Sinks.many().unicast().onBackpressureBuffer();
      // Each record is mapped once; the same ProducerRecord is checked and sent.
      Flux<SenderRecord<String, byte[], T>> legal = Flux.from(records)
          .<SenderRecord<String, byte[], T>>handle((r, next) -> {
            ProducerRecord<String, byte[]> record = KafkaRecords.toProducerRecord(r);
            RuntimeException rejection = rejectedLocally(record);
            if (rejection == null) {
              next.next(SenderRecord.create(record, r.correlation()));
              return;
            }
            SendGuard guard = SendGuard.of(r.correlation());
            if (guard != null) {
              guard.sendFailed();
            }
            rejected.tryEmitNext(new SendResult<>(r.correlation(), rejection));
          })
          .doFinally(signal -> rejected.tryEmitComplete());
      // With stopOnError(false), reactor-kafka still ends the Flux with the first failed record's
      // exception once everything is answered, although that record was already answered with
      // it. Complete instead: a bounded send (WAL mode: one batch) would otherwise lose its
      // results' settlement. That exception is the first one its callbacks recorded, so it is
      // among the first errors answered (callbacks on different threads may each be "first",
      // so one is not enough); only those are kept, not every error of a long outage.
      AnsweredErrors answered = new AnsweredErrors(ANSWERED_ERRORS_KEPT);
      return Flux.merge(
          sender.send(legal)
              .map(result -> {
                if (result.exception() != null) {
                  answered.remember(result.exception());
                }
                return new SendResult<>(result.correlationMetadata(), result.exception());
              })
              .onErrorResume(answered::contains, error -> Flux.empty()),
          rejected.asFlux());
    });
  }

  /** The first few errors answered by one {@code send}, by identity; bounded. */
  static final class AnsweredErrors {
    private final Set<Throwable> errors = Collections.newSetFromMap(new IdentityHashMap<>());
    private final int limit;

    AnsweredErrors(int limit) {
      this.limit = limit;
    }

    synchronized void remember(Throwable error) {
      if (errors.size() < limit) {
        errors.add(error);
      }
    }

    synchronized boolean contains(Throwable error) {
      return errors.contains(error);
    }

    synchronized int size() {
      return errors.size();
    }
  }

  private @Nullable RuntimeException rejectedLocally(ProducerRecord<String, byte[]> record) {
    String illegal = KafkaRecords.illegalTopic(record.topic());
    if (illegal != null) {
      return new InvalidTopicException(illegal);
    }
    int size = KafkaRecords.estimatedSize(record);
    if (size > maxRequestSize) {
      return new RecordTooLargeException("The message is " + size + " bytes when serialized"
          + " which is larger than " + maxRequestSize + ", which is the value of the "
          + ProducerConfig.MAX_REQUEST_SIZE_CONFIG + " configuration.");
    }
    return null;
  }

  @Override
  public Mono<Void> close() {
    // KafkaSender.close() waits for the producer to flush: keep it off non-blocking threads.
    return Mono.<Void>fromRunnable(sender::close).subscribeOn(Schedulers.boundedElastic());
  }

  /** Yes: see the class description. */
  @Override
  public boolean checksSendGuard() {
    return true;
  }
}
