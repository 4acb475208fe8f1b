package dev.outbox.benchmarks;

import com.sun.management.GarbageCollectionNotificationInfo;
import dev.outbox.r2dbc.OutboxTable;
import dev.outbox.relay.OutboundRecord;
import dev.outbox.relay.OutboxRelay;
import dev.outbox.relay.ReactorKafkaSink;
import dev.outbox.relay.RelayHandle;
import dev.outbox.relay.RelayMode;
import dev.outbox.relay.RelayOptions;
import dev.outbox.relay.RelayOutcome;
import dev.outbox.relay.SendResult;
import io.r2dbc.pool.ConnectionPool;
import io.r2dbc.pool.ConnectionPoolConfiguration;
import io.r2dbc.spi.ConnectionFactories;
import io.r2dbc.spi.ConnectionFactory;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.lang.management.GarbageCollectorMXBean;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;
import java.lang.management.MemoryUsage;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.EnumMap;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import javax.management.NotificationEmitter;
import javax.management.openmbean.CompositeData;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.internals.RecordHeader;
import reactor.core.Disposable;
import reactor.core.publisher.Flux;
import reactor.core.publisher.Mono;
import reactor.kafka.sender.KafkaSender;
import reactor.kafka.sender.SenderOptions;
import reactor.kafka.sender.SenderRecord;

/**
 * A benchmark child JVM, started with {@link Child#start}: for {@link HeapBenchmark} (with {@code
 * -Xmx256m}) either a relay draining the backlog, or the plain {@link KafkaSender} baseline
 * sending the same number of records; for {@link PartitionedScalingBenchmark} one PARTITIONED
 * relay among several, which prints {@code READY} once created, starts on a {@code go} line on
 * its stdin and stops on the next line ({@code stop}) or at the end of its stdin (the parent
 * gone). Ends by printing one {@code RESULT key=value …} line that the parent parses; exits 0 on
 * success, 1 on a failure, and (with {@code -XX:+ExitOnOutOfMemoryError}) 3 on any {@link
 * OutOfMemoryError}.
 *
 * <pre>
 * DrainChild relay       &lt;r2dbc url&gt; &lt;bootstrap&gt; &lt;table&gt; &lt;topic&gt; &lt;messages&gt; &lt;payload bytes&gt;
 * DrainChild baseline    -            &lt;bootstrap&gt; -       &lt;topic&gt; &lt;messages&gt; &lt;payload bytes&gt;
 * DrainChild partitioned &lt;r2dbc url&gt; &lt;bootstrap&gt; &lt;table&gt; -       0          0
 * </pre>
 *
 * ({@code partitioned}: the instance id is {@code -Dbench.child.instanceId}; before {@code
 * READY} the child fills its pool and, given {@code -Dbench.child.warmUpTopic}, sends one record
 * there through its sink, so that the clock does not include connecting.)
 */
public final class DrainChild {
  /** As {@link RelayBenchmark}; {@code -Dbench.maxInFlight} / {@code -Dbench.claimSize} change them. */
  static final int MAX_IN_FLIGHT = Integer.getInteger("bench.maxInFlight", 2_000);
  static final int CLAIM_SIZE = Integer.getInteger("bench.claimSize", 200);
  private static final Duration TIMEOUT = Duration.ofMinutes(Long.getLong("bench.heap.timeoutMinutes", 60));

  private DrainChild() {}

  public static void main(String[] args) throws Exception {
    String mode = args[0];
    String url = args[1];
    String bootstrap = args[2];
    String table = args[3];
    String topic = args[4];
    long messages = Long.parseLong(args[5]);
    int payloadBytes = Integer.parseInt(args[6]);
    HeapMonitor heap = HeapMonitor.start();
    try {
      String result = switch (mode) {
        case "relay" -> relay(url, bootstrap, table, messages);
        case "baseline" -> baseline(bootstrap, topic, messages, payloadBytes);
        case "partitioned" -> partitioned(url, bootstrap, table);
        default -> throw new IllegalArgumentException("mode must be relay, baseline or partitioned: " + mode);
      };
      heap.stop();
      System.out.println("RESULT mode=" + mode + " " + result + " " + heap.summary());
      System.out.flush();
      System.exit(0);
    } catch (Throwable e) {
      e.printStackTrace();
      System.out.println("RESULT mode=" + mode + " error=" + e.getClass().getSimpleName());
      System.out.flush();
      System.exit(e instanceof OutOfMemoryError ? 3 : 1);
    }
  }

  private static Map<String, Object> producer(String bootstrap) {
    Map<String, Object> props = new HashMap<>();
    props.put("bootstrap.servers", bootstrap);
    props.put("max.block.ms", 5_000);
    return props;
  }

  private static String relay(String url, String bootstrap, String table, long messages)
      throws InterruptedException {
    ConnectionFactory factory = ConnectionFactories.get(url);
    ConnectionPool pool = new ConnectionPool(ConnectionPoolConfiguration.builder(factory)
        .initialSize(0).maxSize(12).maxAcquireTime(Duration.ofSeconds(30)).build());
    OutboxRelay relay = OutboxRelay.create(pool, RelayOptions.builder()
        .table(OutboxTable.of(table))
        .kafka(producer(bootstrap))
        .maxInFlight(MAX_IN_FLIGHT)
        .claimSize(CLAIM_SIZE)
        .pollInterval(Duration.ofMillis(100))
        .build());
    AtomicLong published = new AtomicLong();
    AtomicLong other = new AtomicLong();
    CountDownLatch done = new CountDownLatch(1);
    Disposable counting = relay.outcomes().subscribe(o -> {
      if (o.kind() == RelayOutcome.Kind.PUBLISHED) {
        if (published.addAndGet(o.messageCount()) >= messages) {
          done.countDown();
        }
      } else {
        other.incrementAndGet();
      }
    });
    long t0 = System.nanoTime();
    RelayHandle handle = relay.start();
    boolean drained = done.await(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
    double seconds = (System.nanoTime() - t0) / 1e9;
    handle.stop(Duration.ofSeconds(10)).block();
    counting.dispose();
    pool.dispose();
    // Not drained in time: still report what was published and the heap figures.
    return String.format(Locale.ROOT, "messages=%d seconds=%.3f otherOutcomes=%d complete=%b",
        published.get(), seconds, other.get(), drained);
  }

  /**
   * One PARTITIONED relay sharing the table with others (each in its own JVM): created before
   * {@code go} so that the parent's clock starts with all relays ready; runs until {@code stop}.
   */
  private static String partitioned(String url, String bootstrap, String table) throws IOException {
    ConnectionFactory factory = ConnectionFactories.get(url);
    ConnectionPool pool = new ConnectionPool(ConnectionPoolConfiguration.builder(factory)
        .initialSize(4).maxSize(12).maxAcquireTime(Duration.ofSeconds(30)).build());
    // The relay's default sink (a ReactorKafkaSink with maxInFlight), created here so that it is
    // connected before the clock starts: one record to -Dbench.child.warmUpTopic, if given.
    ReactorKafkaSink sink = ReactorKafkaSink.create(producer(bootstrap), MAX_IN_FLIGHT);
    String warmUpTopic = System.getProperty("bench.child.warmUpTopic");
    if (warmUpTopic != null) {
      SendResult<Integer> warm = sink.send(Flux.just(new OutboundRecord<>(warmUpTopic, "warm-up",
          new byte[1], Instant.now(), Map.of(), 0))).blockLast(Duration.ofSeconds(60));
      if (warm == null || !warm.acknowledged()) {
        throw new IllegalStateException("Warm-up record not acknowledged: "
            + (warm == null ? "no answer" : warm.error()));
      }
    }
    pool.warmup().block(Duration.ofSeconds(60));
    OutboxRelay relay = OutboxRelay.create(pool, RelayOptions.builder()
        .table(OutboxTable.of(table))
        .mode(RelayMode.PARTITIONED)
        .instanceId(System.getProperty("bench.child.instanceId", "bench-child"))
        .sink(sink)
        .maxInFlight(MAX_IN_FLIGHT)
        .claimSize(CLAIM_SIZE)
        .pollInterval(Duration.ofMillis(100))
        .build());
    Map<RelayOutcome.Kind, AtomicLong> outcomes = new EnumMap<>(RelayOutcome.Kind.class);
    for (RelayOutcome.Kind kind : RelayOutcome.Kind.values()) {
      outcomes.put(kind, new AtomicLong());
    }
    AtomicLong published = new AtomicLong();
    Disposable counting = relay.outcomes().subscribe(o -> {
      outcomes.get(o.kind()).incrementAndGet();
      if (o.kind() == RelayOutcome.Kind.PUBLISHED) {
        published.addAndGet(o.messageCount());
      }
    });
    BufferedReader stdin = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    System.out.println("READY");
    System.out.flush();
    String go = stdin.readLine();
    if (!"go".equals(go)) {
      throw new IllegalStateException("Expected go on stdin, got " + go);
    }
    long t0 = System.nanoTime();
    RelayHandle handle = relay.start();
    String stop = stdin.readLine(); // "stop", or null: the parent is gone
    double seconds = (System.nanoTime() - t0) / 1e9;
    handle.stop(Duration.ofSeconds(10)).block();
    counting.dispose();
    sink.close().block();
    pool.dispose();
    return String.format(Locale.ROOT,
        "messages=%d seconds=%.3f published=%d retries=%d deadLettered=%d leaseLost=%d released=%d complete=%b",
        published.get(), seconds, outcomes.get(RelayOutcome.Kind.PUBLISHED).get(),
        outcomes.get(RelayOutcome.Kind.RETRY_SCHEDULED).get(),
        outcomes.get(RelayOutcome.Kind.DEAD_LETTERED).get(),
        outcomes.get(RelayOutcome.Kind.LEASE_LOST).get(),
        outcomes.get(RelayOutcome.Kind.RELEASED).get(), "stop".equals(stop));
  }

  private static String baseline(String bootstrap, String topic, long messages, int payloadBytes) {
    byte[] payload = new byte[payloadBytes];
    java.util.Arrays.fill(payload, (byte) 'a');
    byte[] contentType = "application/octet-stream".getBytes(StandardCharsets.UTF_8);
    // The relay sink's producer defaults (ReactorKafkaSink), and the same maxInFlight.
    Map<String, Object> props = RelayBenchmark.withRelayProducerDefaults(producer(bootstrap));
    long t0 = System.nanoTime();
    KafkaSender<String, byte[]> sender = KafkaSender.create(
        SenderOptions.<String, byte[]>create(props).maxInFlight(MAX_IN_FLIGHT));
    // The same records the relay sends: key k<g mod 1000>, message_id and content_type headers.
    long[] result = sender.send(Flux.range(1, (int) messages).map(g -> {
          ProducerRecord<String, byte[]> record = new ProducerRecord<>(topic,
              String.format(Locale.ROOT, "k%03d", g % 1000), payload);
          record.headers().add(new RecordHeader("message_id",
              String.format(Locale.ROOT, "%025d00", g).getBytes(StandardCharsets.UTF_8)));
          record.headers().add(new RecordHeader("content_type", contentType));
          return SenderRecord.create(record, g);
        }))
        .reduce(new long[2], (acc, r) -> {
          acc[r.exception() == null ? 0 : 1]++;
          return acc;
        })
        .block(TIMEOUT);
    double seconds = (System.nanoTime() - t0) / 1e9;
    Mono.fromRunnable(sender::close).block();
    if (result == null || result[1] > 0 || result[0] != messages) {
      throw new IllegalStateException("Baseline acknowledged " + (result == null ? 0 : result[0])
          + " of " + messages + ", " + (result == null ? "?" : result[1]) + " failed");
    }
    return String.format(Locale.ROOT, "messages=%d seconds=%.3f otherOutcomes=0 complete=true", result[0], seconds);
  }

  /**
   * A running {@link DrainChild} JVM: its output (stdout and stderr) goes to {@code <name>.log}
   * under {@code -Dbench.outputDir}; lines can be sent to its stdin.
   */
  static final class Child {
    private final String name;
    private final Process process;
    private final Path log;
    private final Writer stdin;

    private Child(String name, Process process, Path log) {
      this.name = name;
      this.process = process;
      this.log = log;
      this.stdin = new OutputStreamWriter(process.getOutputStream(), StandardCharsets.UTF_8);
    }

    /**
     * Starts {@code java <jvmOptions> -cp <this class path> DrainChild <args>}.
     *
     * @param name the child's name, for messages and its log file {@code <name>.log}
     */
    static Child start(String name, List<String> jvmOptions, List<String> args) throws IOException {
      Path dir = Paths.get(System.getProperty("bench.outputDir", "target"));
      Files.createDirectories(dir);
      Path log = dir.resolve(name + ".log");
      String java = Paths.get(System.getProperty("java.home"), "bin", "java").toString();
      List<String> command = new ArrayList<>();
      command.add(java);
      command.addAll(jvmOptions);
      command.addAll(List.of("-cp", System.getProperty("java.class.path"), DrainChild.class.getName()));
      command.addAll(args);
      Process process = new ProcessBuilder(command).redirectErrorStream(true)
          .redirectOutput(log.toFile()).start();
      return new Child(name, process, log);
    }

    Path log() {
      return log;
    }

    /**
     * Waits (polling its log every 100 ms) until the child printed {@code line}; fails if it
     * exited or {@code timeout} passed first.
     */
    void awaitLine(String line, Duration timeout) throws IOException, InterruptedException {
      long deadline = System.nanoTime() + timeout.toNanos();
      while (!Files.readAllLines(log, StandardCharsets.UTF_8).contains(line)) {
        if (!process.isAlive()) {
          throw new IllegalStateException(name + " child exited (" + process.exitValue()
              + ") before printing " + line + "; see " + log + ":\n" + tail());
        }
        if (System.nanoTime() > deadline) {
          throw new IllegalStateException(name + " child did not print " + line + " within "
              + timeout + "; see " + log);
        }
        Thread.sleep(100);
      }
    }

    /** Fails if the child has exited (it should be running). */
    void checkRunning() throws IOException {
      if (!process.isAlive()) {
        throw new IllegalStateException(name + " child exited (" + process.exitValue() + "); see "
            + log + ":\n" + tail());
      }
    }

    /** Writes {@code line} to the child's stdin. */
    void send(String line) throws IOException {
      stdin.write(line + "\n");
      stdin.flush();
    }

    /** Ends the child now (after a failure elsewhere); no-op when it already exited. */
    void destroy() {
      process.destroyForcibly();
    }

    /**
     * Waits for the child to exit and returns its {@code RESULT} fields; fails if it did not
     * finish within {@code timeout}, ran out of memory, exited with an error or printed no result.
     */
    Map<String, String> result(Duration timeout) throws IOException, InterruptedException {
      if (!process.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
        process.destroyForcibly();
        throw new IllegalStateException(name + " child did not finish in " + timeout + "; see " + log);
      }
      String output = Files.readString(log, StandardCharsets.UTF_8);
      if (output.contains("OutOfMemoryError") || process.exitValue() == 3) {
        throw new IllegalStateException(name + " child ran out of memory; see " + log);
      }
      String result = output.lines().filter(l -> l.startsWith("RESULT ")).reduce((a, b) -> b).orElse(null);
      if (process.exitValue() != 0 || result == null || result.contains("error=")) {
        throw new IllegalStateException(name + " child failed (exit " + process.exitValue() + "); see "
            + log + ":\n" + tail());
      }
      Map<String, String> fields = new HashMap<>();
      for (String part : result.substring("RESULT ".length()).split(" ")) {
        int eq = part.indexOf('=');
        fields.put(part.substring(0, eq), part.substring(eq + 1));
      }
      return fields;
    }

    private String tail() throws IOException {
      List<String> lines = Files.readAllLines(log, StandardCharsets.UTF_8);
      return String.join("\n", lines.subList(Math.max(0, lines.size() - 30), lines.size())) + "\n";
    }
  }

  /**
   * Heap while running: the highest heap use sampled every 10 ms (live objects plus garbage not
   * yet collected), and the highest heap use right after a collection (what survives: the
   * working set).
   */
  static final class HeapMonitor {
    private final MemoryMXBean memory = ManagementFactory.getMemoryMXBean();
    private final AtomicLong peakUsed = new AtomicLong();
    private final AtomicLong peakCommitted = new AtomicLong();
    private final AtomicLong peakAfterGc = new AtomicLong();
    private final AtomicLong collections = new AtomicLong();
    private final List<String> collectors = new ArrayList<>();
    private final Thread sampler;
    private volatile boolean running = true;

    private HeapMonitor() {
      for (GarbageCollectorMXBean gc : ManagementFactory.getGarbageCollectorMXBeans()) {
        collectors.add(gc.getName().replace(' ', '_'));
        ((NotificationEmitter) gc).addNotificationListener((notification, handback) -> {
          if (!GarbageCollectionNotificationInfo.GARBAGE_COLLECTION_NOTIFICATION.equals(notification.getType())) {
            return;
          }
          GarbageCollectionNotificationInfo info =
              GarbageCollectionNotificationInfo.from((CompositeData) notification.getUserData());
          long after = 0;
          for (Map.Entry<String, MemoryUsage> pool : info.getGcInfo().getMemoryUsageAfterGc().entrySet()) {
            if (isHeapPool(pool.getKey())) {
              after += pool.getValue().getUsed();
            }
          }
          collections.incrementAndGet();
          peakAfterGc.accumulateAndGet(after, Math::max);
        }, null, null);
      }
      sampler = new Thread(() -> {
        while (running) {
          MemoryUsage usage = memory.getHeapMemoryUsage();
          peakUsed.accumulateAndGet(usage.getUsed(), Math::max);
          peakCommitted.accumulateAndGet(usage.getCommitted(), Math::max);
          try {
            Thread.sleep(10);
          } catch (InterruptedException e) {
            return;
          }
        }
      }, "heap-sampler");
      sampler.setDaemon(true);
      sampler.start();
    }

    private static final List<String> HEAP_POOL_NAMES = ManagementFactory.getMemoryPoolMXBeans().stream()
        .filter(p -> p.getType() == java.lang.management.MemoryType.HEAP)
        .map(java.lang.management.MemoryPoolMXBean::getName).toList();

    private static boolean isHeapPool(String name) {
      return HEAP_POOL_NAMES.contains(name);
    }

    static HeapMonitor start() {
      return new HeapMonitor();
    }

    void stop() throws InterruptedException {
      running = false;
      sampler.interrupt();
      sampler.join();
    }

    String summary() {
      return String.format(Locale.ROOT,
          "peakUsedBytes=%d peakCommittedBytes=%d peakAfterGcBytes=%d maxHeapBytes=%d gcs=%d collectors=%s",
          peakUsed.get(), peakCommitted.get(), peakAfterGc.get(), Runtime.getRuntime().maxMemory(),
          collections.get(), String.join(",", collectors));
    }
  }
}
