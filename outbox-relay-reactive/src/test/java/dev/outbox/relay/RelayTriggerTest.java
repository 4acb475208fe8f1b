package dev.outbox.relay;

import dev.outbox.r2dbc.HeartbeatNotifier;
import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxTransactions;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.Poll;
import dev.outbox.testing.PostgresExtension;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import java.io.OutputStream;
import java.net.DatagramPacket;
import java.net.DatagramSocket;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import reactor.core.publisher.Mono;

/** With polling set to an hour, only the triggers can make a write reach Kafka quickly. */
@ExtendWith(PostgresExtension.class)
class RelayTriggerTest {
  private static final Duration HOUR = Duration.ofHours(1);
  private static final Duration QUICKLY = Duration.ofSeconds(10);

  private final TestKafka kafka = TestKafka.get();
  private final OutboxFixture outbox;
  private final String topic = TestPostgres.uniqueName("trig");
  private final List<RelayHandle> relays = new ArrayList<>();
  private final AtomicInteger claims = new AtomicInteger();

  RelayTriggerTest(TestPostgres postgres) {
    outbox = new OutboxFixture(postgres, 8);
    kafka.createTopic(topic, 1);
  }

  @AfterEach
  void tearDown() {
    relays.forEach(r -> r.stop(Duration.ofSeconds(5)).block(Duration.ofSeconds(10)));
    outbox.close();
  }

  private RelayHandle start(RelayOptions.Builder options) {
    RelayHandle handle = OutboxRelay.create(outbox.pool, options.table(outbox.table)
        .kafka(kafka.producerProperties()).pollInterval(HOUR)
        .metrics(new RelayMetrics() {
          @Override
          public void claimed(int batches, int records, Duration latency) {
            claims.incrementAndGet();
          }
        })
        .build()).start();
    relays.add(handle);
    // The first poll tick fires at start; wait for it so that it cannot deliver what follows.
    Poll.until("the start-up claim ran", QUICKLY, () -> claims.get() > 0);
    return handle;
  }

  private Message write(OutboxWriter writer, String text) {
    Message m = Message.builder().stream(topic).key("k")
        .data(text.getBytes(StandardCharsets.UTF_8)).build();
    OutboxTransactions.inTransaction(outbox.pool, c -> writer.write(m)).block(QUICKLY);
    return m;
  }

  private void assertDelivered(Message... messages) {
    Poll.until("the outbox is empty", QUICKLY, () -> outbox.rows() == 0);
    new Delivery(kafka.consume(List.of(topic), messages.length, QUICKLY, Duration.ofMillis(300)))
        .assertAtLeastOnce(List.of(messages));
  }

  private static int freePort() throws Exception {
    try (ServerSocket socket = new ServerSocket(0)) {
      return socket.getLocalPort();
    }
  }

  @Test
  void notifyDeliversACommittedWriteNeverARolledBackOneAndSurvivesAKilledListener() {
    String channel = outbox.table.notifyChannel();
    OutboxWriter notifying = OutboxWriter.builder().table(outbox.table).notifyChannel(channel).build();
    start(RelayOptions.builder().listen(channel));
    Poll.until("the relay listens", QUICKLY, () -> outbox.postgres.queryLong(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN " + channel + "'") == 1);

    OutboxTransactions.inTransaction(outbox.pool, c -> notifying.write(
            Message.builder().stream(topic).data(new byte[] {0}).build())
        .then(Mono.error(new IllegalStateException("roll back"))))
        .onErrorResume(IllegalStateException.class, e -> Mono.empty()).block(QUICKLY);
    Message first = write(notifying, "first");
    assertDelivered(first);

    long killed = outbox.postgres.queryLong("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        + " WHERE query = 'LISTEN " + channel + "'");
    assertThat(killed).isEqualTo(1);
    Poll.until("the relay listens again", QUICKLY, () -> outbox.postgres.queryLong(
        "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN " + channel + "'") == 1);
    Message second = write(notifying, "second");
    assertDelivered(first, second);
  }

  @Test
  void tcpUdpAndUnixHeartbeatsEachWakeTheRelay() throws Exception {
    InetSocketAddress tcp = new InetSocketAddress("127.0.0.1", freePort());
    InetSocketAddress udp = new InetSocketAddress("127.0.0.1", freePort());
    Path unix = Files.createTempDirectory("outbox").resolve("relay.sock");
    start(RelayOptions.builder().heartbeatTcp(tcp).heartbeatUdp(udp).heartbeatUnixSocket(unix));
    Poll.until("the UNIX socket is bound", QUICKLY, () -> Files.exists(unix));
    OutboxWriter writer = OutboxWriter.builder().table(outbox.table).build();

    List<Message> written = new ArrayList<>();
    for (HeartbeatNotifier notifier : List.of(HeartbeatNotifier.tcp(tcp), HeartbeatNotifier.udp(udp),
        HeartbeatNotifier.unixSocket(unix))) {
      written.add(write(writer, "via " + notifier));
      int before = claims.get();
      // UDP may drop a datagram: send until the relay has claimed.
      Poll.until("a heartbeat wakes the relay", QUICKLY, () -> {
        notifier.notifyWork().block(QUICKLY);
        return claims.get() > before && outbox.rows() == 0;
      });
    }
    assertDelivered(written.toArray(Message[]::new));
  }

  @Test
  void garbageAndFloodsAreHarmlessAndDebounced() throws Exception {
    InetSocketAddress tcp = new InetSocketAddress("127.0.0.1", freePort());
    InetSocketAddress udp = new InetSocketAddress("127.0.0.1", freePort());
    Duration debounce = Duration.ofMillis(100);
    start(RelayOptions.builder().heartbeatTcp(tcp).heartbeatUdp(udp).wakeDebounce(debounce));
    int before = claims.get();

    long started = System.nanoTime();
    byte[] garbage = new byte[1 << 20];
    new java.util.Random(7).nextBytes(garbage);
    try (Socket socket = new Socket(tcp.getAddress(), tcp.getPort());
        DatagramSocket datagrams = new DatagramSocket()) {
      OutputStream out = socket.getOutputStream();
      for (int i = 0; i < 8; i++) {
        out.write(garbage); // 8 MB without a newline
      }
      for (int i = 0; i < 5_000; i++) {
        datagrams.send(new DatagramPacket(garbage, 0, 512, InetAddress.getLoopbackAddress(), udp.getPort()));
      }
    }
    long windows = Duration.ofNanos(System.nanoTime() - started).toMillis() / debounce.toMillis() + 2;
    int floodClaims = claims.get() - before;
    System.out.printf("heartbeat flood: %d claim cycles in %d debounce windows%n", floodClaims, windows);
    assertThat(floodClaims).isLessThanOrEqualTo((int) windows);

    // Still alive and listening.
    OutboxWriter writer = OutboxWriter.builder().table(outbox.table).build();
    Message after = write(writer, "after the flood");
    HeartbeatNotifier.tcp(tcp).notifyWork().block(QUICKLY);
    assertDelivered(after);
  }
}
