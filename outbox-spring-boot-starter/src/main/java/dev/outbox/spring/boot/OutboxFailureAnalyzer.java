package dev.outbox.spring.boot;

import dev.outbox.r2dbc.InvalidConfigurationException;
import org.springframework.boot.diagnostics.AbstractFailureAnalyzer;
import org.springframework.boot.diagnostics.FailureAnalysis;

/**
 * Turns an outbox configuration error at startup into Spring Boot's "APPLICATION FAILED TO
 * START" report: what is wrong, and which property or bean fixes it. (An unknown {@code
 * outbox.relay.mode} is a binding error that Boot's own analyzer reports with the valid values.)
 */
final class OutboxFailureAnalyzer extends AbstractFailureAnalyzer<InvalidConfigurationException> {

  @Override
  protected FailureAnalysis analyze(Throwable rootFailure, InvalidConfigurationException cause) {
    if (cause instanceof OutboxStartupException missing) {
      String message = missing.getMessage();
      String description = message.substring(0, message.length() - missing.action().length()).strip();
      return new FailureAnalysis(description, missing.action(), cause);
    }
    return new FailureAnalysis("Invalid outbox configuration: " + cause.getMessage(),
        "Fix the outbox.* property it names: options are the kebab-case properties under"
            + " outbox.relay (maxInFlight is outbox.relay.max-in-flight, Kafka producer properties"
            + " are outbox.relay.kafka.*), the table is outbox.table.", cause);
  }
}
