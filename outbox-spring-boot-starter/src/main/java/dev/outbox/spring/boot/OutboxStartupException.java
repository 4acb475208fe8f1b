package dev.outbox.spring.boot;

import dev.outbox.r2dbc.InvalidConfigurationException;

/**
 * Something the outbox auto-configuration needs is missing; {@link #action()} says how to supply
 * it ({@link OutboxFailureAnalyzer} shows both when startup fails).
 */
final class OutboxStartupException extends InvalidConfigurationException {
  private static final long serialVersionUID = 1L;

  private final String action;

  OutboxStartupException(String message, String action) {
    super(message + " " + action);
    this.action = action;
  }

  String action() {
    return action;
  }
}
