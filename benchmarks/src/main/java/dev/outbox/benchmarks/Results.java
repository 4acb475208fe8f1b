package dev.outbox.benchmarks;

import com.sun.management.OperatingSystemMXBean;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The summary table of a run: one row per figure, each with the baseline measured in the same
 * run and the ratio of the two. Benchmarks add rows; {@link Benchmarks} renders them at the end.
 */
final class Results {
  /** One figure against its same-run baseline. */
  record Row(String benchmark, String ours, String baseline, String ratio, String notes) {}

  private static final List<Row> ROWS = new ArrayList<>();
  private static final double SCALE = Double.parseDouble(System.getProperty("bench.scale", "1"));

  private Results() {}

  static synchronized void add(String benchmark, String ours, String baseline, String ratio,
      String notes) {
    ROWS.add(new Row(benchmark, ours, baseline, ratio, notes));
  }

  /**
   * Like {@link #add}, but placed right after the last row so far whose benchmark name starts
   * with one of {@code anchors} (appended when there is none), so that a peer's figures sit
   * beside the rows they compare with.
   */
  static synchronized void addAfter(List<String> anchors, String benchmark, String ours,
      String baseline, String ratio, String notes) {
    int at = ROWS.size();
    for (int i = ROWS.size() - 1; i >= 0; i--) {
      String name = ROWS.get(i).benchmark();
      if (anchors.stream().anyMatch(name::startsWith)) {
        at = i + 1;
        break;
      }
    }
    ROWS.add(at, new Row(benchmark, ours, baseline, ratio, notes));
  }

  static synchronized List<Row> rows() {
    return List.copyOf(ROWS);
  }

  /** {@code -Dbench.scale} (default 1): multiplies message counts and durations. */
  static double scale() {
    return SCALE;
  }

  /** {@code base × scale}, at least {@code min}. */
  static int scaled(int base, int min) {
    return (int) Math.max(min, Math.round(base * SCALE));
  }

  static String rate(double perSecond, String unit) {
    return String.format(Locale.ROOT, "%,.0f %s", perSecond, unit);
  }

  static String ratio(double ours, double baseline) {
    if (!(baseline > 0) || Double.isNaN(ours)) {
      return "n/a";
    }
    return String.format(Locale.ROOT, "**%.3f**", ours / baseline);
  }

  static String mb(long bytes) {
    return String.format(Locale.ROOT, "%,d MB", bytes >> 20);
  }

  /** The machine this run measured, for the header line. */
  static String machine(String servers) {
    OperatingSystemMXBean os = (OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
    return String.format(Locale.ROOT,
        "%d cores, %.1f GiB RAM, %s %s (%s), Java %s (%s), benchmark JVM max heap %d MB, %s",
        Runtime.getRuntime().availableProcessors(), os.getTotalMemorySize() / (double) (1L << 30),
        System.getProperty("os.name"), System.getProperty("os.version"), System.getProperty("os.arch"),
        System.getProperty("java.version"), System.getProperty("java.vm.name"),
        Runtime.getRuntime().maxMemory() >> 20, servers);
  }

  static double loadAverage() {
    return ManagementFactory.getOperatingSystemMXBean().getSystemLoadAverage();
  }

  static String render(String which, String machine, ZonedDateTime started, Duration elapsed,
      double loadBefore, double loadAfter) {
    StringBuilder out = new StringBuilder();
    out.append("## Benchmark results (`-Dbench=").append(which).append("`")
        .append(SCALE == 1 ? "" : ", `-Dbench.scale=" + SCALE + "`").append(")\n\n");
    out.append("Machine: ").append(machine).append(".  \n");
    out.append(String.format(Locale.ROOT,
        "Date: %s; run time %d min %02d s; load average %.2f before, %.2f after.%n%n",
        started.format(DateTimeFormatter.ISO_OFFSET_DATE_TIME.withLocale(Locale.ROOT)),
        elapsed.toMinutes(), elapsed.toSecondsPart(), loadBefore, loadAfter));
    out.append("| Benchmark | Ours | Baseline (same run) | Ratio | Notes |\n");
    out.append("|---|---|---|---|---|\n");
    for (Row r : rows()) {
      out.append("| ").append(cell(r.benchmark())).append(" | ").append(cell(r.ours()))
          .append(" | ").append(cell(r.baseline())).append(" | ").append(cell(r.ratio()))
          .append(" | ").append(cell(r.notes())).append(" |\n");
    }
    out.append("\nRatio = ours / baseline. Throughput: higher is better (1.0 = as fast as the "
        + "baseline). Latency and heap: lower is better.\n");
    return out.toString();
  }

  private static String cell(String text) {
    return text.replace("|", "\\|").replace("\n", " ");
  }

  static void write(Path file, String markdown) {
    try {
      if (file.getParent() != null) {
        Files.createDirectories(file.getParent());
      }
      Files.writeString(file, markdown, StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new UncheckedIOException("Could not write " + file, e);
    }
  }
}
