package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.time.Duration;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.NotEnoughReplicasException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.TopicAuthorizationException;
import org.junit.jupiter.api.Test;

class RetryPolicyTest {

  @Test
  void backoffDoublesUpToTheCapWithoutJitter() {
    RetryPolicy policy = RetryPolicy.builder().initialBackoff(Duration.ofMillis(100))
        .maxBackoff(Duration.ofSeconds(1)).jitter(0).maxAttempts(5).build();
    assertThat(policy.backoff(1)).isEqualTo(Duration.ofMillis(100));
    assertThat(policy.backoff(2)).isEqualTo(Duration.ofMillis(200));
    assertThat(policy.backoff(4)).isEqualTo(Duration.ofMillis(800));
    assertThat(policy.backoff(5)).isEqualTo(Duration.ofSeconds(1));
    assertThat(policy.backoff(500)).isEqualTo(Duration.ofSeconds(1));
    assertThat(policy.allowsAnotherAttempt(4)).isTrue();
    assertThat(policy.allowsAnotherAttempt(5)).isFalse();
  }

  @Test
  void jitterStaysWithinItsSpread() {
    RetryPolicy policy = RetryPolicy.builder().initialBackoff(Duration.ofMillis(1000))
        .maxBackoff(Duration.ofSeconds(10)).jitter(0.25).build();
    for (int i = 0; i < 1000; i++) {
      assertThat(policy.backoff(1).toMillis()).isBetween(750L, 1250L);
    }
  }

  @Test
  void invalidValuesAreNamed() {
    assertThatThrownBy(() -> RetryPolicy.builder().maxAttempts(0).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("maxAttempts");
    assertThatThrownBy(() -> RetryPolicy.builder().jitter(1.5).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("jitter");
    assertThatThrownBy(() -> RetryPolicy.builder().initialBackoff(Duration.ofSeconds(5))
            .maxBackoff(Duration.ofSeconds(1)).build())
        .isInstanceOf(InvalidConfigurationException.class).hasMessageContaining("maxBackoff");
  }

  @Test
  void defaultClassifierSeparatesFatalFromRetriable() {
    FailureClassifier classifier = FailureClassifier.kafkaDefault();
    assertThat(classifier.isFatal(new RecordTooLargeException("big"))).isTrue();
    assertThat(classifier.isFatal(new InvalidTopicException("bad"))).isTrue();
    assertThat(classifier.isFatal(new TopicAuthorizationException("no"))).isTrue();
    assertThat(classifier.isFatal(new RuntimeException(new RecordTooLargeException("wrapped"))))
        .isTrue();
    assertThat(classifier.isFatal(new TimeoutException("slow"))).isFalse();
    assertThat(classifier.isFatal(new NotEnoughReplicasException("few"))).isFalse();
    assertThat(classifier.isFatal(new IllegalStateException("unknown"))).isFalse();
  }
}
