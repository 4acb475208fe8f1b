package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimRequest;
import dev.outbox.r2dbc.internal.RelayStore;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;

/**
 * PARALLEL and ORDERED: claims due batches whenever a tick (poll interval, a wake-up from the
 * triggers, room freed in the ledger) finds room in the budgets. Claims run one at a time; a
 * full claim asks for another at once. In ORDERED mode only the leader claims.
 */
final class ClaimLoop implements BatchSource {
  private static final Logger log = LoggerFactory.getLogger(ClaimLoop.class);

  private final RelayStore store;
  private final Ledger ledger;
  private final RelayOptions options;
  private final ClaimCycles cycles;
  private final AtomicBoolean mayClaim;

  /**
   * @param externalWakeups notifications and heartbeats (debounced here)
   * @param mayClaim false while this instance must not claim (ORDERED standby)
   */
  ClaimLoop(RelayStore store, Ledger ledger, RelayOptions options, Flux<Long> externalWakeups,
      AtomicBoolean mayClaim) {
    this.store = store;
    this.ledger = ledger;
    this.options = options;
    this.cycles = new ClaimCycles(options, externalWakeups);
    this.mayClaim = mayClaim;
  }

  @Override
  public Flux<List<BatchInFlight>> batches() {
    return cycles.run(this::claim);
  }

  @Override
  public void wake() {
    cycles.wake();
  }

  @Override
  public void stop() {
    cycles.stop();
  }


  /** One claim within the free budgets; the batches are in the ledger before they are emitted. */
  private Flux<List<BatchInFlight>> claim() {
    return Flux.defer(() -> {
      Ledger.Room room = mayClaim.get() && !cycles.stopping() ? ledger.room() : null;
      if (room == null) {
        return Flux.empty(); // a settlement or leadership will wake us
      }
      ClaimRequest request = ClaimRequest
          .of(options.claimSize(), options.leaseDuration(), options.instanceId())
          .withMessageBudget(room.records(), room.empty())
          .withByteBudget(room.bytes());
      if (options.mode() == RelayMode.ORDERED) {
        request = request.inOrder();
      }
      long started = System.nanoTime();
      long generation = ledger.generation();
      ClaimHandoff handoff = new ClaimHandoff();
      // Cancelled (a stop, a pipeline restart) while the statement runs, its leases go back.
      return handoff.givenBackIfCancelled(store.claim(request).collectList(), claimed -> claimed,
              store, options.instanceId())
          .flatMapMany(claimed -> {
            if (!claimed.isEmpty() && !handoff.take()) {
              return Flux.empty(); // cancelled meanwhile: its leases are given back
            }
            List<BatchInFlight> batches = ledger.register(claimed, generation, false);
            if (batches == null) { // the pipeline was abandoned meanwhile: give them back
              // Not as an inner of this (cancelled) flux: it would be cancelled with it.
              store.releaseAll(claimed).onErrorResume(e -> Mono.empty()).subscribe();
              return Flux.empty();
            }
            options.metrics().claimed(claimed.size(),
                claimed.stream().mapToInt(c -> c.messageCount()).sum(),
                Duration.ofNanos(System.nanoTime() - started));
            if (claimed.size() == options.claimSize()) {
              wake(); // a full claim: there is probably more
            }
            return batches.isEmpty() ? Flux.empty() : Flux.just(batches);
          })
          .onErrorResume(error -> {
            log.warn("Outbox relay {} could not claim; trying again at the next poll: {}",
                options.instanceId(), error.toString());
            return Flux.empty();
          });
    });
  }
}
