package dev.outbox.r2dbc;

import java.time.Duration;
import org.junit.jupiter.api.Test;
import reactor.blockhound.BlockingOperationError;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;

/** Proves the suite runs under BlockHound: a blocking call on a Reactor thread fails. */
class BlockHoundInstalledTest {
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
