package dev.outbox.r2dbc;

import java.time.Instant;
import java.util.Optional;
import org.jspecify.annotations.Nullable;

/**
 * Size of the outbox backlog at one moment, read cheaply enough to poll every few seconds
 * whatever the backlog ({@link OutboxStore#stats()}): the counts are exact up to {@value
 * #EXACT_UP_TO} rows and <b>estimates</b> above (see {@link #rowsEstimated()}).
 *
 * @param rows outbox rows not yet published (claimed or not): exact when at most {@value
 *     #EXACT_UP_TO}; above that, PostgreSQL's planner estimate ({@code pg_class.reltuples}
 *     scaled to the table's current size, as fresh as the last {@code VACUUM}/{@code ANALYZE}),
 *     and never less than {@value #EXACT_UP_TO} + 1
 * @param oldestInsertTime {@code insert_time} of the first row in insert order (the next one
 *     relays take), {@code null} when empty. This is the oldest row except for rows re-driven
 *     from the dead letters (they keep their original time but go to the end of the order) and
 *     rows of a transaction that ran long before inserting (their time is the transaction's
 *     start)
 * @param deadLetters rows in the dead-letter table, exact or estimated as {@code rows}
 */
public record BacklogStats(long rows, @Nullable Instant oldestInsertTime, long deadLetters) {
  /** Counts up to this are exact; above it they are estimates. */
  public static final long EXACT_UP_TO = 10_000;

  public Optional<Instant> oldest() {
    return Optional.ofNullable(oldestInsertTime);
  }

  /** Whether {@link #rows()} is an estimate (more than {@value #EXACT_UP_TO} rows). */
  public boolean rowsEstimated() {
    return rows > EXACT_UP_TO;
  }

  /** Whether {@link #deadLetters()} is an estimate (more than {@value #EXACT_UP_TO}). */
  public boolean deadLettersEstimated() {
    return deadLetters > EXACT_UP_TO;
  }
}
