package dev.outbox.faults;

import dev.outbox.testing.TestKafka;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import org.apache.kafka.clients.consumer.ConsumerRecord;

/**
 * The consumer side of the fault suite: reads a whole topic and holds it against what the
 * writer committed and rolled back.
 */
final class DeliveryChecker {
  private DeliveryChecker() {}

  /** What a consumer saw, against what was committed. Empty lists mean the invariant held. */
  record Report(
      String scenario,
      int committed,
      int rolledBack,
      int records,
      int duplicates,
      List<String> missing,
      List<String> rolledBackButDelivered,
      List<String> deliveredButNeverCommitted,
      List<String> orderViolations) {

    boolean holds() {
      return missing.isEmpty() && rolledBackButDelivered.isEmpty()
          && deliveredButNeverCommitted.isEmpty() && orderViolations.isEmpty();
    }

    @Override
    public String toString() {
      return String.format("%s: committed %d, rolled back %d, records %d, duplicates %d,"
              + " missing %d %s, rolled back but delivered %d %s, never committed but delivered"
              + " %d %s, per-key order violations %d %s",
          scenario, committed, rolledBack, records, duplicates,
          missing.size(), sample(missing), rolledBackButDelivered.size(),
          sample(rolledBackButDelivered), deliveredButNeverCommitted.size(),
          sample(deliveredButNeverCommitted), orderViolations.size(), sample(orderViolations));
    }

    private static List<String> sample(List<String> values) {
      return values.subList(0, Math.min(5, values.size()));
    }
  }

  /**
   * Reads {@code topic} to its current end and checks: every committed tag delivered at least
   * once, no rolled-back tag delivered, nothing delivered that no transaction committed, and
   * (if {@code ordered}) each key's first deliveries in ascending {@code seq} order. An order
   * violation names both tags with every delivery of each ({@code partition@offset}).
   */
  static Report check(String scenario, TestKafka kafka, String topic,
      Set<String> committed, Set<String> rolledBack, boolean ordered) {
    List<ConsumerRecord<String, byte[]>> records = kafka.readToEnd(topic);
    Map<String, Integer> seen = new HashMap<>();
    Map<String, List<String>> positions = new HashMap<>();
    Map<String, String> lastFirstTagByKey = new HashMap<>();
    List<String[]> outOfOrder = new ArrayList<>();
    // Records of one key share a partition, and readToEnd keeps each partition's order.
    for (ConsumerRecord<String, byte[]> record : records) {
      String tag = new String(record.value(), StandardCharsets.UTF_8);
      positions.computeIfAbsent(tag, t -> new ArrayList<>(1))
          .add(record.partition() + "@" + record.offset());
      if (seen.merge(tag, 1, Integer::sum) > 1) {
        continue; // a duplicate: only first deliveries count for order
      }
      if (ordered && committed.contains(tag)) {
        String previous = lastFirstTagByKey.put(LoadWriter.keyOf(tag), tag);
        if (previous != null && LoadWriter.seqOf(previous) > LoadWriter.seqOf(tag)) {
          outOfOrder.add(new String[] {tag, previous});
        }
      }
    }
    List<String> orderViolations = new ArrayList<>();
    for (String[] pair : outOfOrder) {
      orderViolations.add(pair[0] + " " + positions.get(pair[0]) + " after " + pair[1] + " "
          + positions.get(pair[1]));
    }
    int duplicates = records.size() - seen.size();
    return new Report(scenario, committed.size(), rolledBack.size(), records.size(), duplicates,
        sorted(difference(committed, seen.keySet())),
        sorted(intersection(rolledBack, seen.keySet())),
        sorted(difference(seen.keySet(), committed)),
        orderViolations);
  }

  private static Set<String> difference(Collection<String> a, Collection<String> b) {
    Set<String> result = new HashSet<>(a);
    result.removeAll(b);
    return result;
  }

  private static Set<String> intersection(Collection<String> a, Collection<String> b) {
    Set<String> result = new HashSet<>(a);
    result.retainAll(b);
    return result;
  }

  private static List<String> sorted(Set<String> values) {
    return new ArrayList<>(new TreeSet<>(values));
  }
}
