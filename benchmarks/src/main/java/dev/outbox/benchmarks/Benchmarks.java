package dev.outbox.benchmarks;

import java.util.Arrays;

/** Entry point: {@code Benchmarks writer|relay}. Prints Markdown tables; never fails on a figure. */
public final class Benchmarks {
  private Benchmarks() {}

  public static void main(String[] args) throws Exception {
    String which = args.length == 0 ? "writer" : args[0];
    switch (which) {
      case "writer" -> WriterBenchmark.main(Arrays.copyOfRange(args, 1, args.length));
      case "relay" -> RelayBenchmark.main(Arrays.copyOfRange(args, 1, args.length));
      case "latency" -> TriggerLatencyBenchmark.main(Arrays.copyOfRange(args, 1, args.length));
      default -> throw new IllegalArgumentException("Unknown benchmark '" + which
          + "'; expected one of: writer, relay, latency");
    }
    dev.outbox.testing.TestKafka.closeIfStarted();
    System.exit(0);
  }
}
