package dev.outbox.spring.boot;

import dev.outbox.relay.RelayOptions;

/**
 * A bean of this type adjusts the embedded relay's options after the {@code outbox.relay.*}
 * properties are applied: for what properties cannot express, such as a {@code sink}, a {@code
 * failureClassifier}, a {@code codec} or heartbeat listeners. Applied in {@code @Order}.
 *
 * <pre>{@code
 * @Bean
 * RelayOptionsCustomizer heartbeats() {
 *   return builder -> builder.heartbeatUdp(new InetSocketAddress("127.0.0.1", 7071));
 * }
 * }</pre>
 */
@FunctionalInterface
public interface RelayOptionsCustomizer {

  /** Changes {@code builder}; {@code build()} validates the result. */
  void customize(RelayOptions.Builder builder);
}
