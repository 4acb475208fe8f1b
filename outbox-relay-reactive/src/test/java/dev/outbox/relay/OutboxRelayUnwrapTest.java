package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import io.r2dbc.spi.Connection;
import io.r2dbc.spi.ConnectionFactory;
import io.r2dbc.spi.ConnectionFactoryMetadata;
import io.r2dbc.spi.Wrapped;
import org.junit.jupiter.api.Test;
import org.reactivestreams.Publisher;
import reactor.core.publisher.Mono;

/**
 * Which factory the relay takes its replication (WAL) and lock (ORDERED) connections from: the
 * one behind every wrapper. Spring Boot wraps its pool ({@code OptionsCapableConnectionFactory}),
 * so one level of unwrapping found the pool and WAL mode never started
 * ({@code DeleteOnceLoggedStarterTest} runs that case on the real servers).
 */
class OutboxRelayUnwrapTest {

  /** A driver's factory: wraps nothing. */
  private static final class Driver implements ConnectionFactory {
    @Override
    public Publisher<? extends Connection> create() {
      return Mono.empty();
    }

    @Override
    public ConnectionFactoryMetadata getMetadata() {
      return () -> "driver";
    }
  }

  /** A pool, a proxy or Boot's options wrapper: a factory around another. */
  private static final class Wrapper implements ConnectionFactory, Wrapped<ConnectionFactory> {
    private ConnectionFactory inner;

    Wrapper(ConnectionFactory inner) {
      this.inner = inner;
    }

    @Override
    public Publisher<? extends Connection> create() {
      return inner.create();
    }

    @Override
    public ConnectionFactoryMetadata getMetadata() {
      return inner.getMetadata();
    }

    @Override
    public ConnectionFactory unwrap() {
      return inner;
    }
  }

  @Test
  void takesTheFactoryBehindEveryWrapper() {
    Driver driver = new Driver();
    assertThat(OutboxRelay.unpooled(driver)).isSameAs(driver);
    assertThat(OutboxRelay.unpooled(new Wrapper(driver))).isSameAs(driver);
    assertThat(OutboxRelay.unpooled(new Wrapper(new Wrapper(driver)))).isSameAs(driver);
  }

  @Test
  void stopsAtAWrapperThatUnwrapsToItselfOrToACycle() {
    Wrapper self = new Wrapper(new Driver());
    self.inner = self;
    assertThat(OutboxRelay.unpooled(self)).isSameAs(self);

    Wrapper a = new Wrapper(new Driver());
    Wrapper b = new Wrapper(a);
    a.inner = b;
    assertThat(OutboxRelay.unpooled(a)).isIn(a, b); // ends, on one of the two
  }
}
