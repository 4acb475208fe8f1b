package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.internal.RelayStore;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.Function;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Mono;

/**
 * Who owns a claim's leases once it has answered: whoever takes them first, the relay applying
 * the answer ({@link #take()}) or the claim's cancel hook giving them back; never both (a cancel
 * can reach the hook after the answer went on: review finding). Thread-safe.
 *
 * <p>A claim statement is not cancelled with its subscriber once sent: the driver does not cancel
 * it, and the leases it writes would be left to expire, holding those rows back from every relay
 * for a lease duration. {@link #givenBackIfCancelled} gives them back once it answers instead.
 */
final class ClaimHandoff {
  private static final Logger log = LoggerFactory.getLogger(ClaimHandoff.class);

  private final AtomicBoolean taken = new AtomicBoolean();

  /** True for the first caller only: the one that owns the answer's leases. */
  boolean take() {
    return taken.compareAndSet(false, true);
  }

  /**
   * {@code claim}, whose answer's leases ({@code leases}) go back to the table through {@code
   * store} if it is cancelled before the relay took the answer with {@link #take()}. An answer
   * that took no lease leaves the handoff alone.
   */
  <T> Mono<T> givenBackIfCancelled(Mono<T> claim, Function<T, List<ClaimedBatch>> leases,
      RelayStore store, String instanceId) {
    return Mono.defer(() -> {
      CompletableFuture<T> sent = claim.toFuture();
      return Mono.fromFuture(sent, true).doOnCancel(() -> sent.thenAccept(answer -> {
        List<ClaimedBatch> leased = answer == null ? List.of() : leases.apply(answer);
        if (!leased.isEmpty() && take()) {
          log.debug("Outbox relay {} gives back {} leases of a claim it stopped waiting for",
              instanceId, leased.size());
          store.releaseAll(leased).onErrorResume(e -> Mono.empty()).subscribe();
        }
      }));
    });
  }
}
