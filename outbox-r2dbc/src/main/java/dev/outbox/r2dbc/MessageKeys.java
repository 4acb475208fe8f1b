package dev.outbox.r2dbc;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** The {@code message_keys} column: the distinct (stream, key) pairs of a batch. */
final class MessageKeys {
  /** Separates stream and key; a control character that topic names cannot contain. */
  static final char SEPARATOR = '\u001f';

  private MessageKeys() {}

  /**
   * {@code batch} split by key (stream and key) in the order each key first appears, the
   * messages without a key together last; the batch itself when it has one key or none.
   */
  static List<List<Message>> rowPerKey(List<Message> batch) {
    Map<String, List<Message>> rows = new LinkedHashMap<>();
    List<Message> keyless = new ArrayList<>();
    for (Message m : batch) {
      if (m.key().isPresent()) {
        rows.computeIfAbsent(m.stream() + SEPARATOR + m.key().get(), k -> new ArrayList<>()).add(m);
      } else {
        keyless.add(m);
      }
    }
    if (rows.size() + (keyless.isEmpty() ? 0 : 1) <= 1) {
      return List.of(batch);
    }
    List<List<Message>> split = new ArrayList<>(rows.values());
    if (!keyless.isEmpty()) {
      split.add(keyless);
    }
    return split;
  }

  static String[] of(List<Message> batch) {
    Set<String> keys = new LinkedHashSet<>();
    for (Message m : batch) {
      m.key().ifPresent(key -> keys.add(m.stream() + SEPARATOR + key));
    }
    return keys.toArray(String[]::new);
  }
}
