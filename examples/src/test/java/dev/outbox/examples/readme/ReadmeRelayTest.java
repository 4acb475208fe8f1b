package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.HeartbeatNotifier;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.relay.MicrometerRelayMetrics;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayOptions;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestKafka;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.spi.Connection;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.Map;
import java.util.UUID;
import java.util.function.Function;
import org.junit.jupiter.api.Test;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import reactor.core.publisher.Mono;
import reactor.test.StepVerifier;

/**
 * README "Relaying to Kafka" and "Triggers", run against PostgreSQL and Kafka. Kept small: the
 * relay's options are being reshaped, and these snippets should follow with little work.
 */
class ReadmeRelayTest {
  private static final Logger log = LoggerFactory.getLogger(ReadmeRelayTest.class);
  private final ReadmeServers servers = ReadmeServers.get();

  /** The README code with what it leaves to the reader. */
  static final class Relaying {
    final ConnectionPool pool = ReadmeServers.get().newPool(4);
    final String bootstrapServers = TestKafka.get().bootstrapServers();
    final MeterRegistry meterRegistry = new SimpleMeterRegistry();

    // tag::relay[]
    RelayHandle startRelay() {
      OutboxRelay relay = OutboxRelay.create(pool, RelayOptions.builder()
          .table(OutboxTable.of("order_outbox"))
          .kafka(Map.of("bootstrap.servers", bootstrapServers))  // or .sink(yourRecordSink)
          .metrics(MicrometerRelayMetrics.create(meterRegistry, "order_outbox"))  // optional
          .build());
      relay.outcomes().subscribe(o -> log.debug("{}", o));     // optional; before start
      return relay.start();                                    // returns at once
    }

    void stopRelay(RelayHandle running) {                      // on shutdown (e.g. @PreDestroy)
      running.stop(Duration.ofSeconds(10)).block();            // not on an event-loop thread
    }
    // end::relay[]
  }

  /** The README's trigger code with what it leaves to the reader. */
  static final class Waking {
    final ConnectionPool pool = ReadmeServers.get().newPool(2);
    final OutboxTable table = ReadmeServers.TABLE;
    final Map<String, Object> kafkaProperties = TestKafka.get().producerProperties();
    final String orderId = UUID.randomUUID().toString();
    final Function<Connection, Mono<Void>> work = connection -> this.writer.write(
        Message.builder().stream("orders").key(orderId).data("woken").build());

    // tag::triggers[]
    // LISTEN/NOTIFY: the writer notifies in the same statement as its insert (so at commit, and
    // never for a rollback); the relay listens on a dedicated connection.
    OutboxWriter writer = OutboxWriter.builder().table(table).notifyChannel(table.notifyChannel()).build();
    RelayOptions listening = RelayOptions.builder().table(table).listen(table.notifyChannel())
        .kafka(kafkaProperties).build();

    // Heartbeats, for a relay running as a separate process: any bytes mean "there is work".
    RelayOptions woken = RelayOptions.builder().table(table).kafka(kafkaProperties)
        .heartbeatUdp(new InetSocketAddress("127.0.0.1", 7071))  // or heartbeatTcp,
        .build();                                                // heartbeatUnixSocket(path)
    HeartbeatNotifier relay = HeartbeatNotifier.udp(new InetSocketAddress("127.0.0.1", 7071));
    Mono<Void> placed = OutboxTransactions.inTransaction(pool, work)
        .then(relay.notifyWork().onErrorResume(e -> Mono.empty()));  // a lost one costs a poll
    // end::triggers[]
  }

  private boolean published(String key) {
    return TestKafka.get().readToEnd(ReadmeServers.TOPIC).stream()
        .anyMatch(r -> key.equals(r.key()));
  }

  @Test
  void theRelayPublishesAWrittenOrderAndStops() {
    Relaying relaying = new Relaying();
    ReadmeWritingTest.Writing writing = new ReadmeWritingTest.Writing(relaying.pool);
    try {
      Order order = new Order(UUID.randomUUID().toString(), "dave");
      StepVerifier.create(writing.placeOrder(order)).verifyComplete();

      RelayHandle running = relaying.startRelay();
      try {
        Poll.until("the order's message is in Kafka", Duration.ofSeconds(60),
            () -> published(order.id()));
      } finally {
        relaying.stopRelay(running);
      }
      assertThat(relaying.meterRegistry.find("outbox.relay.records.published").counter())
          .isNotNull()
          .satisfies(c -> assertThat(c.count()).isGreaterThanOrEqualTo(1));
    } finally {
      relaying.pool.dispose();
    }
  }

  @Test
  void theTriggerSnippetWritesAndNotifies() {
    Waking waking = new Waking();
    try {
      long before = servers.count("SELECT count(*) FROM {schema}.order_outbox");
      StepVerifier.create(waking.placed).verifyComplete();
      // No relay runs on this table between tests, so the row is still there.
      assertThat(servers.count("SELECT count(*) FROM {schema}.order_outbox")).isEqualTo(before + 1);
      log.debug("trigger options: {} / {}", waking.listening, waking.woken);
    } finally {
      waking.pool.dispose();
    }
  }
}
