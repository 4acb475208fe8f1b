package dev.outbox.spring.boot;

import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.util.List;
import org.springframework.beans.factory.BeanFactory;
import org.springframework.beans.factory.support.DefaultListableBeanFactory;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.diagnostics.FailureAnalysis;
import org.springframework.boot.diagnostics.FailureAnalyzer;
import org.springframework.boot.r2dbc.autoconfigure.R2dbcAutoConfiguration;
import org.springframework.boot.r2dbc.autoconfigure.R2dbcTransactionManagerAutoConfiguration;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.boot.transaction.autoconfigure.TransactionAutoConfiguration;
import org.springframework.core.annotation.AnnotationAwareOrderComparator;
import org.springframework.core.env.Environment;
import org.springframework.core.env.StandardEnvironment;
import org.springframework.core.io.support.SpringFactoriesLoader;
import org.springframework.core.io.support.SpringFactoriesLoader.ArgumentResolver;

/** What the starter's tests share: a context runner on the real servers, failure analysis. */
final class StarterTests {
  private StarterTests() {}

  /**
   * Boot's R2DBC, R2DBC transaction and transaction auto-configurations plus ours, on the test
   * PostgreSQL and Kafka, with a table of the test's own created at startup.
   */
  static ApplicationContextRunner runner(String table) {
    return new ApplicationContextRunner().withConfiguration(configurations())
        .withPropertyValues(properties(table));
  }

  static AutoConfigurations configurations() {
    return AutoConfigurations.of(R2dbcAutoConfiguration.class,
        R2dbcTransactionManagerAutoConfiguration.class, TransactionAutoConfiguration.class,
        OutboxAutoConfiguration.class);
  }

  static String[] properties(String table) {
    return new String[] {
            "spring.r2dbc.url=" + TestPostgres.get().url(),
            "spring.r2dbc.pool.initial-size=1",
            "spring.r2dbc.pool.max-size=4",
            "spring.kafka.bootstrap-servers=" + TestKafka.get().bootstrapServers(),
            "outbox.table=" + table,
            "outbox.schema.create-if-missing=true",
            "outbox.relay.poll-interval=100ms",
            "outbox.relay.stats-interval=200ms",
            "outbox.relay.shutdown-timeout=2s"};
  }

  /**
   * What Spring Boot would print for a failed startup: the first analysis of the analyzers
   * registered in {@code META-INF/spring.factories} (Boot's and ours), in their order.
   */
  static FailureAnalysis analyze(Throwable failure) {
    List<FailureAnalyzer> analyzers = SpringFactoriesLoader
        .forDefaultResourceLocation(StarterTests.class.getClassLoader())
        .load(FailureAnalyzer.class,
            ArgumentResolver.of(BeanFactory.class, new DefaultListableBeanFactory())
                .and(Environment.class, new StandardEnvironment()),
            // As Boot does: an analyzer whose classes are absent (Bean Validation) is skipped.
            (type, name, error) -> {});
    AnnotationAwareOrderComparator.sort(analyzers);
    for (FailureAnalyzer analyzer : analyzers) {
      FailureAnalysis analysis = analyzer.analyze(failure);
      if (analysis != null) {
        return analysis;
      }
    }
    throw new AssertionError("No failure analyzer explains " + failure);
  }
}
