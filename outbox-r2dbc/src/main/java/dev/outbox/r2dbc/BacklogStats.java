package dev.outbox.r2dbc;

import java.time.Instant;
import java.util.Optional;
import org.jspecify.annotations.Nullable;

/**
 * Size of the outbox backlog at one moment.
 *
 * @param rows outbox rows not yet published (claimed or not)
 * @param oldestInsertTime insert time of the oldest row, {@code null} when empty
 * @param deadLetters rows in the dead-letter table
 */
public record BacklogStats(long rows, @Nullable Instant oldestInsertTime, long deadLetters) {
  public Optional<Instant> oldest() {
    return Optional.ofNullable(oldestInsertTime);
  }
}
