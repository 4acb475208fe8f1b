package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.time.Duration;
import java.util.concurrent.ThreadLocalRandom;

/**
 * How often and how late a batch whose publication failed with a retriable error is tried again.
 * Attempt {@code n} (1-based) waits {@code min(maxBackoff, initialBackoff * 2^(n-1))}, scaled by
 * a random factor in {@code [1 - jitter, 1 + jitter]}; after {@code maxAttempts} failed attempts
 * the batch is dead-lettered.
 *
 * <p>The wait is stored in the row ({@code next_attempt_at}), so it survives relay restarts and
 * holds for every relay instance, which Reactor's in-memory {@code Retry.backoff} could not do.
 *
 * <pre>{@code
 * RetryPolicy policy = RetryPolicy.of(10, Duration.ofMillis(500));       // 2x backoff, 60 s cap
 * RetryPolicy custom = RetryPolicy.builder().maxAttempts(20).maxBackoff(Duration.ofMinutes(5)).build();
 * }</pre>
 *
 * <p>Immutable and thread-safe.
 *
 * @param maxAttempts failed attempts before dead-lettering, at least 1
 * @param initialBackoff wait after the first failure
 * @param maxBackoff the wait never exceeds this (before jitter)
 * @param jitter relative spread in {@code [0, 1)}
 */
public record RetryPolicy(int maxAttempts, Duration initialBackoff, Duration maxBackoff,
    double jitter) {

  /**
   * 20 attempts, 500 ms doubling up to 60 s, 20 % jitter: about 15 minutes of failures (a broker
   * outage, a missing topic) before a batch is dead-lettered.
   */
  public static final RetryPolicy DEFAULT =
      new RetryPolicy(20, Duration.ofMillis(500), Duration.ofSeconds(60), 0.2);

  public RetryPolicy {
    if (maxAttempts < 1) {
      throw new InvalidConfigurationException("retry maxAttempts must be >= 1, got " + maxAttempts);
    }
    if (initialBackoff.isNegative()) {
      throw new InvalidConfigurationException("retry initialBackoff must be >= 0, got "
          + initialBackoff);
    }
    if (maxBackoff.compareTo(initialBackoff) < 0) {
      throw new InvalidConfigurationException("retry maxBackoff (" + maxBackoff
          + ") must be >= initialBackoff (" + initialBackoff + ")");
    }
    if (!(jitter >= 0 && jitter < 1)) {
      throw new InvalidConfigurationException("retry jitter must be in [0, 1), got " + jitter);
    }
  }

  /** {@code maxAttempts} attempts, doubling from {@code initialBackoff}, 60 s cap, 20 % jitter. */
  public static RetryPolicy of(int maxAttempts, Duration initialBackoff) {
    Duration cap = initialBackoff.compareTo(DEFAULT.maxBackoff) > 0 ? initialBackoff : DEFAULT.maxBackoff;
    return new RetryPolicy(maxAttempts, initialBackoff, cap, DEFAULT.jitter);
  }

  public static Builder builder() {
    return new Builder();
  }

  /** Whether a batch that has now failed {@code failedAttempts} times may be tried again. */
  public boolean allowsAnotherAttempt(int failedAttempts) {
    return failedAttempts < maxAttempts;
  }

  /** The wait after the {@code failedAttempts}-th failure (1-based). */
  public Duration backoff(int failedAttempts) {
    int doublings = Math.min(Math.max(failedAttempts - 1, 0), 40);
    double base = Math.min((double) maxBackoff.toMillis(),
        initialBackoff.toMillis() * Math.pow(2, doublings));
    double spread = jitter == 0 ? 1 : 1 + ThreadLocalRandom.current().nextDouble(-jitter, jitter);
    return Duration.ofMillis(Math.round(base * spread));
  }

  /** Builder starting from {@link #DEFAULT}; {@link #build()} validates. */
  public static final class Builder {
    private int maxAttempts = DEFAULT.maxAttempts;
    private Duration initialBackoff = DEFAULT.initialBackoff;
    private Duration maxBackoff = DEFAULT.maxBackoff;
    private double jitter = DEFAULT.jitter;

    private Builder() {}

    public Builder maxAttempts(int maxAttempts) {
      this.maxAttempts = maxAttempts;
      return this;
    }

    public Builder initialBackoff(Duration initialBackoff) {
      this.initialBackoff = initialBackoff;
      return this;
    }

    public Builder maxBackoff(Duration maxBackoff) {
      this.maxBackoff = maxBackoff;
      return this;
    }

    public Builder jitter(double jitter) {
      this.jitter = jitter;
      return this;
    }

    public RetryPolicy build() {
      return new RetryPolicy(maxAttempts, initialBackoff, maxBackoff, jitter);
    }
  }
}
