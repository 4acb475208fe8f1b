package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

class PartitionAssignmentTest {
  private static final int P = 32;

  @Test
  void everyPartitionHasExactlyOneRelayAndSharesDifferByAtMostOne() {
    for (int n = 1; n <= 40; n++) {
      List<String> live = relays(n);
      Map<String, List<Integer>> assignment = PartitionAssignment.of(P, live);
      List<Integer> all = new ArrayList<>();
      assignment.values().forEach(all::addAll);
      assertThat(all).as("%d relays", n).containsExactlyInAnyOrderElementsOf(IntStream.range(0, P).boxed().toList());
      int min = assignment.values().stream().mapToInt(List::size).min().orElseThrow();
      int max = assignment.values().stream().mapToInt(List::size).max().orElseThrow();
      assertThat(max - min).as("%d relays", n).isLessThanOrEqualTo(1);
      assertThat(assignment).hasSize(n);
    }
  }

  @Test
  void everyRelayComputesTheSameAnswerWhateverOrderItListsTheOthersIn() {
    List<String> live = relays(5);
    List<String> reversed = new ArrayList<>(live);
    java.util.Collections.reverse(reversed);
    assertThat(PartitionAssignment.of(P, reversed)).isEqualTo(PartitionAssignment.of(P, live));
    for (String r : live) {
      assertThat(PartitionAssignment.wanted(P, reversed, r)).isEqualTo(PartitionAssignment.of(P, live).get(r));
    }
  }

  @Test
  void aRelayJoiningOrLeavingMovesFewPartitions() {
    // A newcomer must take ~P/(n+1); p mod n (over the sorted relays) moved most of the table.
    for (int n = 1; n < 8; n++) {
      List<String> before = relays(n);
      List<String> after = relays(n + 1);
      int moved = moved(PartitionAssignment.of(P, before), PartitionAssignment.of(P, after));
      int modMoved = moved(modN(before), modN(after));
      int share = (P + n) / (n + 1); // what the newcomer must take, at most ceil(P / (n + 1))
      System.out.printf("%d -> %d relays: %d of %d partitions move (the newcomer's share %d; p mod n: %d)%n",
          n, n + 1, moved, P, share, modMoved);
      assertThat(moved).as("%d -> %d relays", n, n + 1).isLessThanOrEqualTo(2 * share);
      if (n > 1) {
        assertThat(moved).as("%d -> %d relays, against p mod n", n, n + 1).isLessThan(modMoved);
      }
      // Leaving is the same change the other way round.
      assertThat(moved(PartitionAssignment.of(P, after), PartitionAssignment.of(P, before))).isEqualTo(moved);
    }
  }

  /** The assignment this replaced: partition p to the relay at index p mod n of the sorted list. */
  private static Map<String, List<Integer>> modN(List<String> live) {
    List<String> sorted = live.stream().sorted().toList();
    Map<String, List<Integer>> assignment = new java.util.HashMap<>();
    sorted.forEach(r -> assignment.put(r, new ArrayList<>()));
    for (int p = 0; p < P; p++) {
      assignment.get(sorted.get(p % sorted.size())).add(p);
    }
    return assignment;
  }

  @Test
  void aRelayWantsNothingWhenItIsNotLive() {
    assertThat(PartitionAssignment.wanted(P, relays(3), "someone-else")).isEmpty();
    assertThat(PartitionAssignment.of(P, List.of())).isEmpty();
  }

  private static int moved(Map<String, List<Integer>> before, Map<String, List<Integer>> after) {
    int moved = 0;
    for (int p = 0; p < P; p++) {
      if (!owner(before, p).equals(owner(after, p))) {
        moved++;
      }
    }
    return moved;
  }

  private static String owner(Map<String, List<Integer>> assignment, int p) {
    return assignment.entrySet().stream().filter(e -> e.getValue().contains(p)).findFirst().orElseThrow().getKey();
  }

  /** The first {@code n} of one list of names like the relay's own (instance id plus a random part). */
  private static List<String> relays(int n) {
    java.util.Random random = new java.util.Random(42);
    List<String> out = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      out.add("relay-" + (1000 + i) + "-" + Long.toHexString(random.nextLong()) + "@" + Integer.toHexString(i * 7919));
    }
    return out;
  }
}
