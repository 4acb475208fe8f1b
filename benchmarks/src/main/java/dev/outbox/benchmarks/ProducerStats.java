package dev.outbox.benchmarks;

import java.lang.management.ManagementFactory;
import java.util.Locale;
import javax.management.MBeanServer;
import javax.management.ObjectName;

/**
 * What the Kafka producers of this JVM have sent so far, from their JMX metrics: requests
 * (produce requests, and the few metadata requests, which {@code request-total} also counts),
 * records, and records per request. Explains a throughput difference on the Kafka
 * side (the broker's cost is mostly per request, so fewer records per request cost more CPU
 * per record).
 */
record ProducerStats(double requests, double records, double bytes) {
  /** Totals over every producer of this JVM that is still open. */
  static ProducerStats now() {
    MBeanServer server = ManagementFactory.getPlatformMBeanServer();
    double requests = 0;
    double records = 0;
    double bytes = 0;
    try {
      for (ObjectName name : server.queryNames(new ObjectName("kafka.producer:type=producer-metrics,*"), null)) {
        requests += number(server.getAttribute(name, "request-total"));
        records += number(server.getAttribute(name, "record-send-total"));
        bytes += number(server.getAttribute(name, "outgoing-byte-total"));
      }
    } catch (Exception e) {
      throw new IllegalStateException("Reading producer metrics failed", e);
    }
    return new ProducerStats(requests, records, bytes);
  }

  ProducerStats minus(ProducerStats earlier) {
    return new ProducerStats(requests - earlier.requests, records - earlier.records, bytes - earlier.bytes);
  }

  @Override
  public String toString() {
    return String.format(Locale.ROOT, "%,.0f requests, %,.0f records (%.1f per request), %.0f bytes per record",
        requests, records, records / Math.max(1, requests), bytes / Math.max(1, records));
  }

  private static double number(Object value) {
    return value instanceof Number n && !Double.isNaN(n.doubleValue()) ? n.doubleValue() : 0;
  }
}
