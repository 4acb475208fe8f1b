package dev.outbox.relay;

import java.time.Duration;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;
import org.jspecify.annotations.Nullable;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/** Sink wrappers and fakes for tests. */
final class TestSinks {
  private TestSinks() {}

  /** Answers every record at once, with the error {@code failure} gives (null: acknowledged). */
  static RecordSink answering(Function<OutboundRecord<?>, @Nullable Throwable> failure) {
    return new RecordSink() {
      @Override
      public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
        return Flux.from(records).map(r -> new SendResult<>(r.correlation(), failure.apply(r)));
      }

      @Override
      public Mono<Void> close() {
        return Mono.empty();
      }
    };
  }

  /** Hands each record to {@code delegate} only after {@code delay}. */
  static RecordSink slow(RecordSink delegate, Duration delay) {
    return new RecordSink() {
      @Override
      public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
        return delegate.send(Flux.from(records).delayElements(delay));
      }

      @Override
      public Mono<Void> close() {
        return delegate.close();
      }
    };
  }

  /** Counts records handed to it and not yet answered, and the most ever outstanding. */
  static final class Probe implements RecordSink {
    private final RecordSink delegate;
    final AtomicLong outstanding = new AtomicLong();
    final AtomicLong maxOutstanding = new AtomicLong();
    final AtomicLong answered = new AtomicLong();

    Probe(RecordSink delegate) {
      this.delegate = delegate;
    }

    @Override
    public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
      return delegate.send(Flux.from(records).doOnNext(r -> {
            long now = outstanding.incrementAndGet();
            maxOutstanding.accumulateAndGet(now, Math::max);
          }))
          .doOnNext(r -> {
            outstanding.decrementAndGet();
            answered.incrementAndGet();
          });
    }

    @Override
    public Mono<Void> close() {
      return delegate.close();
    }
  }

  /**
   * Like {@link #answering}, but honours {@link SendGuard} as the library's sinks do: a record
   * whose unit already failed is answered {@link SendGuard.EarlierRecordFailedException} without
   * being "sent"; a failure marks the unit. Answers wait {@code delay} each (in order), and the
   * most records outstanding at once is recorded.
   */
  static final class Guarding implements RecordSink {
    private final Function<OutboundRecord<?>, @Nullable Throwable> failure;
    private final Duration delay;
    final AtomicLong outstanding = new AtomicLong();
    final AtomicLong maxOutstanding = new AtomicLong();

    Guarding(Function<OutboundRecord<?>, @Nullable Throwable> failure, Duration delay) {
      this.failure = failure;
      this.delay = delay;
    }

    @Override
    public <T> Flux<SendResult<T>> send(Publisher<OutboundRecord<T>> records) {
      return Flux.from(records)
          .map(r -> {
            maxOutstanding.accumulateAndGet(outstanding.incrementAndGet(), Math::max);
            SendGuard guard = SendGuard.of(r.correlation());
            if (guard != null && guard.sendAbandoned()) {
              return new SendResult<>(r.correlation(), new SendGuard.EarlierRecordFailedException());
            }
            Throwable error = failure.apply(r);
            if (error != null && guard != null) {
              guard.sendFailed();
            }
            return new SendResult<>(r.correlation(), error);
          })
          // Up to 256 outstanding, answered in order after the delay.
          .flatMapSequential(result -> Mono.delay(delay).thenReturn(result), 256)
          .doOnNext(r -> outstanding.decrementAndGet());
    }

    @Override
    public Mono<Void> close() {
      return Mono.empty();
    }

    @Override
    public boolean checksSendGuard() {
      return true;
    }
  }
}
