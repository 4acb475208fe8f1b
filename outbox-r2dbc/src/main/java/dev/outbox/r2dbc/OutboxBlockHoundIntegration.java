package dev.outbox.r2dbc;

import reactor.blockhound.BlockHound;
import reactor.blockhound.integration.BlockHoundIntegration;

/**
 * Tells BlockHound (when an application installs it) about the library's one deliberate
 * blocking call: seeding the id generator from the OS entropy source, once per JVM. Loaded by
 * {@code ServiceLoader}; BlockHound is an optional dependency.
 */
public final class OutboxBlockHoundIntegration implements BlockHoundIntegration {
  @Override
  public void applyTo(BlockHound.Builder builder) {
    builder.allowBlockingCallsInside("dev.outbox.r2dbc.internal.Entropy", "seeded");
  }
}
