package dev.outbox.testing;

import java.time.Duration;
import org.junit.jupiter.api.Test;
import reactor.blockhound.BlockingOperationError;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;

/**
 * Extend in a module's tests to prove its suite runs under BlockHound: a blocking call on a
 * Reactor thread must fail.
 */
public abstract class BlockHoundCheck {
  @Test
  void blockingOnAParallelThreadIsReported() {
    StepVerifier.create(Mono.delay(Duration.ofMillis(1)).doOnNext(x -> {
          try {
            Thread.sleep(5);
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
          }
        }))
        .expectError(BlockingOperationError.class)
        .verify(Duration.ofSeconds(5));
  }
}
