package dev.outbox.relay;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Which relay wants which partition: the same answer on every relay that sees the same live
 * relays, each relay getting {@code floor(P/n)} or {@code ceil(P/n)} partitions, and few
 * partitions moving when a relay joins or leaves.
 *
 * <p>Rendezvous hashing with bounded load: each partition, in order, goes to the relay with the
 * highest hash of (relay, partition) among those not yet full. A relay joining takes about
 * {@code P/n} partitions, mostly from the others' surplus, instead of the {@code p mod n}
 * reshuffle that moved about 20 of 32 partitions going from two relays to three. Stateless,
 * thread-safe.
 */
final class PartitionAssignment {
  private PartitionAssignment() {}

  /** The partitions of {@code total} that {@code relay} wants, ascending. */
  static List<Integer> wanted(int total, List<String> live, String relay) {
    return of(total, live).getOrDefault(relay, List.of());
  }

  /** Every live relay's partitions (ascending); {@code live} in any order, without duplicates. */
  static Map<String, List<Integer>> of(int total, List<String> live) {
    Map<String, List<Integer>> assigned = new HashMap<>();
    if (live.isEmpty()) {
      return assigned;
    }
    List<String> relays = live.stream().distinct().sorted().toList();
    int floor = total / relays.size();
    int ceilings = total % relays.size(); // how many relays may take one more than floor
    live.forEach(r -> assigned.put(r, new ArrayList<>()));
    int atCeiling = 0;
    for (int p = 0; p < total; p++) {
      String best = null;
      long bestWeight = 0;
      for (String r : relays) {
        int load = assigned.get(r).size();
        boolean full = load > floor || (load == floor && atCeiling >= ceilings);
        long weight = weight(r, p);
        if (!full && (best == null || Long.compareUnsigned(weight, bestWeight) > 0)) {
          best = r;
          bestWeight = weight;
        }
      }
      List<Integer> mine = assigned.get(best);
      mine.add(p);
      if (mine.size() == floor + 1) {
        atCeiling++;
      }
    }
    return assigned;
  }

  /** A well-mixed 64-bit hash of (relay, partition), the same in every JVM. */
  private static long weight(String relay, int partition) {
    long h = 0xcbf29ce484222325L; // FNV-1a over the relay's chars, then the partition
    for (int i = 0; i < relay.length(); i++) {
      h = (h ^ relay.charAt(i)) * 0x100000001b3L;
    }
    h ^= partition * 0x9E3779B97F4A7C15L;
    // splitmix64 finaliser
    h = (h ^ (h >>> 30)) * 0xbf58476d1ce4e5b9L;
    h = (h ^ (h >>> 27)) * 0x94d049bb133111ebL;
    return h ^ (h >>> 31);
  }
}
