package dev.outbox.testing;

import reactor.blockhound.BlockHound;
import reactor.blockhound.integration.BlockHoundIntegration;

/**
 * BlockHound allowances for third-party code in the test stack, applied when
 * blockhound-junit-platform installs BlockHound for the whole suite.
 */
public final class TestBlockHoundIntegration implements BlockHoundIntegration {
  @Override
  public void applyTo(BlockHound.Builder builder) {
    // r2dbc-postgresql's SCRAM login draws a nonce from the platform SecureRandom, which reads
    // /dev/urandom on the event loop. Only reached with a password (OUTBOX_TEST_POSTGRES_URL);
    // the embedded server trusts local logins.
    builder.allowBlockingCallsInside("com.ongres.scram.common.ScramFunctions", "nonce");
    // Netty 4.2's default (adaptive) buffer allocator takes a StampedLock write lock when it
    // grows or frees a magazine; under contention the event loop parks for a moment. That is
    // a short critical section, not I/O, and Netty's own BlockHound integration predates it.
    builder.allowBlockingCallsInside("io.netty.buffer.AdaptivePoolingAllocator$Magazine", "free");
    builder.allowBlockingCallsInside("io.netty.buffer.AdaptivePoolingAllocator$MagazineGroup",
        "tryExpandMagazines");
    builder.allowBlockingCallsInside("io.netty.buffer.AdaptivePoolingAllocator$MagazineGroup", "free");
    // OpenTelemetry (tests with tracing) picks its context storage once per JVM, with a
    // ServiceLoader that reads jar files, the first time any thread asks for the current context:
    // usually the first traced request's event loop.
    builder.allowBlockingCallsInside("io.opentelemetry.context.LazyStorage", "createStorage");
  }
}
