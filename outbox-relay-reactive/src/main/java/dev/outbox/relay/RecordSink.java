package dev.outbox.relay;

import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * Where the relay sends records: a small seam over the Kafka client so that more than one
 * implementation can stand behind the relay. Two ship with the library and pass the same
 * contract tests: {@link ReactorKafkaSink} (reactor-kafka, the default) and {@link
 * KafkaProducerSink} (the plain {@code KafkaProducer}, for when reactor-kafka, discontinued
 * upstream, is not wanted).
 *
 * <p>Contract:
 *
 * <ul>
 *   <li>{@link #send} emits exactly one {@link SendResult} per record it received, success or
 *       failure; a failed record never terminates the returned Flux;
 *   <li>at most its in-flight limit of records are waiting for the broker, and it requests
 *       records from upstream only as answers come back (backpressure); {@link ReactorKafkaSink}
 *       additionally queues up to 256 records ahead (reactor-kafka's internal prefetch);
 *   <li>records with the same topic and key are sent in upstream order;
 *   <li>it never blocks the subscribing thread;
 *   <li>the returned Flux completes after upstream completes and every result was emitted.
 * </ul>
 *
 * Implementations are thread-safe; {@link #send} may be called again after a previous call
 * ended.
 */
public interface RecordSink {

  <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records);

  /** Releases the client (producer); waits for nothing that was not already acknowledged. */
  Mono<Void> close();

  /**
   * Whether this sink, right before it hands each record to the producer, asks the record's
   * correlation whether an earlier record of the same unit already failed, and then answers the
   * record as failed instead of sending it. Both of the library's sinks do. Only behind such a
   * sink does the relay send several rows of one key as one unit ({@link
   * RelayOptions.Builder#rowsPerKeyInFlight}); behind any other, a key has one row in flight.
   * A wrapper that hands records unchanged to another sink may return that sink's answer.
   */
  default boolean checksSendGuard() {
    return false;
  }
}
