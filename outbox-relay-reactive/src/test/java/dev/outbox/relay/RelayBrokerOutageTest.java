package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.outbox.r2dbc.Message;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.locks.LockSupport;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/** The broker goes away for 10 s mid-run; nothing may be lost and the relay must resume alone. */
@ExtendWith(PostgresExtension.class)
class RelayBrokerOutageTest {

  @Test
  void brokerStoppedForTenSecondsMidRunLosesNothing(TestPostgres postgres) {
    TestKafka kafka = TestKafka.get();
    assumeTrue(kafka.isEmbedded(), "needs the embedded broker to stop it");
    String topic = TestPostgres.uniqueName("outage");
    kafka.createTopic(topic, 3);
    try (OutboxFixture outbox = new OutboxFixture(postgres, 8)) {
      List<Message> written = new ArrayList<>(outbox.write(200, 20, b -> IntStream.range(0, 10)
          .mapToObj(j -> Message.builder().stream(topic).key("k" + (b % 30)).data(new byte[32]).build())
          .toList()));
      List<RelayOutcome> seen = new CopyOnWriteArrayList<>();
      OutboxRelay relay = OutboxRelay.create(outbox.pool, RelayOptions.builder()
          .table(outbox.table).kafka(kafka.producerProperties())
          .pollInterval(Duration.ofMillis(100))
          .retryPolicy(RetryPolicy.builder().maxAttempts(1_000).initialBackoff(Duration.ofMillis(200))
              .maxBackoff(Duration.ofSeconds(2)).build())
          .build());
      relay.outcomes().subscribe(seen::add);
      RelayHandle running = relay.start();
      try {
        Poll.until("the relay is publishing", Duration.ofSeconds(30), () -> !seen.isEmpty());

        kafka.stopBroker();
        long down = System.nanoTime();
        try {
          written.addAll(outbox.write(200, 20, b -> IntStream.range(0, 10)
              .mapToObj(j -> Message.builder().stream(topic).key("late" + (b % 30)).data(new byte[32]).build())
              .toList()));
          LockSupport.parkNanos(Duration.ofSeconds(10).toNanos() - (System.nanoTime() - down));
          assertThat(outbox.rows()).as("rows wait while the broker is down").isPositive();
        } finally {
          kafka.startBroker();
        }

        Poll.until("the backlog drains after the broker is back", Duration.ofSeconds(120),
            () -> outbox.rows() == 0);
      } finally {
        running.stop(Duration.ofSeconds(10)).block(Duration.ofSeconds(20));
      }
      Delivery delivery = new Delivery(kafka.consume(List.of(topic), written.size(),
          Duration.ofSeconds(60), Duration.ofSeconds(1)));
      delivery.assertAtLeastOnce(written);
      System.out.printf("broker outage: %d messages, %d duplicates, %d retries scheduled%n",
          written.size(), delivery.duplicates(),
          seen.stream().filter(o -> o.kind() == RelayOutcome.Kind.RETRY_SCHEDULED).count());
      assertThat(outbox.store.deadLetters(10).collectList().block()).isEmpty();
    }
  }
}
