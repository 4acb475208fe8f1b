package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.time.Duration;
import java.util.Map;
import java.util.Queue;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.core.scheduler.Scheduler;
import reactor.core.scheduler.Schedulers;
import reactor.util.concurrent.Queues;

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
  /** Sends waiting for the send thread, oldest first; {@link #queued} counts unfinished drains. */
  private final Queue<PendingSend> pending = Queues.<PendingSend>unboundedMultiproducer().get();
  private final AtomicInteger queued = new AtomicInteger();

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
      Consumer<Throwable> failed = error -> {
        if (guard != null) {
          guard.sendFailed();
        }
        result.success(new SendResult<>(record.correlation(), error));
      };
      PendingSend pendingSend = new PendingSend(() -> {
        if (guard != null && guard.sendAbandoned()) {
          result.success(new SendResult<>(record.correlation(),
              new SendGuard.EarlierRecordFailedException()));
          return;
        }
        try {
          producer.send(KafkaRecords.toProducerRecord(record), (metadata, error) -> {
            if (error != null) {
              failed.accept(error);
            } else {
              result.success(new SendResult<>(record.correlation(), null));
            }
          });
        } catch (RuntimeException error) { // closed producer, interrupted, serializer failure
          failed.accept(error);
        }
      }, failed);
      result.onCancel(pendingSend::cancel); // not sent once cancelled, as a task not yet run
      sendLater(pendingSend);
    }), maxInFlight);
  }

  /** A send waiting for the send thread, and how to fail it should that thread be gone. */
  private static final class PendingSend {
    private final Runnable send;
    private final Consumer<Throwable> fail;
    private volatile boolean cancelled;

    PendingSend(Runnable send, Consumer<Throwable> fail) {
      this.send = send;
      this.fail = fail;
    }

    void cancel() {
      cancelled = true;
    }

    void send() {
      if (!cancelled) {
        send.run();
      }
    }

    void fail(Throwable error) {
      if (!cancelled) {
        fail.accept(error);
      }
    }
  }

  /**
   * Queues a send for the send thread, in order; schedules one task for the whole queue when none
   * runs. A task a record (a subscribeOn on each) cost a thread wake-up each: a WAL drain spent
   * 106 µs of JVM CPU a message, 0.35x the Debezium peer (benchmark run 73).
   */
  private void sendLater(PendingSend send) {
    pending.offer(send);
    if (queued.getAndIncrement() == 0) {
      try {
        sendThread.schedule(this::sendPending);
      } catch (RejectedExecutionException closed) { // the sink is closed: fail what waits
        failPending(closed);
      }
    }
  }

  private void sendPending() {
    int missed = 1;
    do {
      for (PendingSend send = pending.poll(); send != null; send = pending.poll()) {
        send.send();
      }
      missed = queued.addAndGet(-missed);
    } while (missed != 0);
  }

  private void failPending(Throwable error) {
    int missed = queued.get();
    do {
      for (PendingSend send = pending.poll(); send != null; send = pending.poll()) {
        send.fail(error);
      }
      missed = queued.addAndGet(-missed);
    } while (missed != 0);
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
