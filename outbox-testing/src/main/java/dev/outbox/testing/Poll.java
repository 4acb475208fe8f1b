package dev.outbox.testing;

import java.time.Duration;
import java.util.concurrent.locks.LockSupport;
import java.util.function.BooleanSupplier;

/** Waits for a condition with a deadline, instead of sleeping for luck. Test threads only. */
public final class Poll {
  private Poll() {}

  /**
   * Re-checks {@code condition} every 20 ms until it holds.
   *
   * @throws AssertionError naming {@code what} when the deadline passes first
   */
  public static void until(String what, Duration deadline, BooleanSupplier condition) {
    long end = System.nanoTime() + deadline.toNanos();
    while (!condition.getAsBoolean()) {
      if (System.nanoTime() > end) {
        throw new AssertionError("Timed out after " + deadline + " waiting for: " + what);
      }
      LockSupport.parkNanos(Duration.ofMillis(20).toNanos());
    }
  }
}
