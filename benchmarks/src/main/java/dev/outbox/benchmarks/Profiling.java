package dev.outbox.benchmarks;

import java.lang.reflect.Method;
import java.nio.file.Path;

/**
 * Optional CPU profile of one phase of a benchmark with async-profiler, so that a profile shows
 * the relay alone and not the baseline or the fill. Off unless {@code -Dbench.profile=<dir>} is
 * set; then the async-profiler jar must be on the boot class path and its library given, e.g.
 * <pre>{@code
 * mvn -B -q dependency:get -Dartifact=tools.profiler:async-profiler:4.2:jar:linux-x64
 * unzip -o ~/.m2/repository/tools/profiler/async-profiler/4.2/async-profiler-4.2-linux-x64.jar -d /tmp/ap
 * mvn -B -q -Pbench -pl benchmarks -am verify -DskipTests -Dbench=relay \
 *   -Dbench.jvmArgs="-Xmx1g -Xbootclasspath/a:/tmp/ap" \
 *   -Dbench.props="-Dbench.profile=/tmp/prof -Dbench.profile.lib=/tmp/ap/linux-x64/libasyncProfiler.so"
 * }</pre>
 * writes {@code /tmp/prof/<phase>.collapsed} (collapsed stacks per thread, for a flame graph or
 * {@code grep}) and {@code <phase>.txt} (hottest methods). Reflection keeps async-profiler out of
 * the module's dependencies.
 */
final class Profiling {
  private static final String DIR = System.getProperty("bench.profile");
  private static final String EVENT = System.getProperty("bench.profile.event", "cpu");

  private Profiling() {}

  /** Starts a CPU profile if {@code bench.profile} is set. */
  static void start() {
    if (DIR != null) {
      execute("start,event=" + EVENT + ",interval=1ms");
    }
  }

  /** Stops the profile started by {@link #start()} and writes it as {@code phase}. */
  static void stop(String phase) {
    if (DIR != null) {
      Path dir = Path.of(DIR);
      dir.toFile().mkdirs();
      execute("stop");
      execute("collapsed,threads,file=" + dir.resolve(phase + ".collapsed"));
      execute("flat=40,traces=0,file=" + dir.resolve(phase + ".txt"));
      System.out.println("profile of " + phase + " written to " + dir);
    }
  }

  private static void execute(String command) {
    try {
      Class<?> type = Class.forName("one.profiler.AsyncProfiler");
      Object profiler = type.getMethod("getInstance", String.class)
          .invoke(null, System.getProperty("bench.profile.lib"));
      Method execute = type.getMethod("execute", String.class);
      execute.invoke(profiler, command);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("async-profiler '" + command + "' failed (is its jar on the boot class path"
          + " and -Dbench.profile.lib its library?)", e);
    }
  }
}
