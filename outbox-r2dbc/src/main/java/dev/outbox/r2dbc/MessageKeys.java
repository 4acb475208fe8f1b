package dev.outbox.r2dbc;

import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;

/** The {@code message_keys} column: the distinct (stream, key) pairs of a batch. */
final class MessageKeys {
  /** Separates stream and key; a control character that topic names cannot contain. */
  static final char SEPARATOR = '\u001f';

  private MessageKeys() {}

  static String[] of(List<Message> batch) {
    Set<String> keys = new LinkedHashSet<>();
    for (Message m : batch) {
      m.key().ifPresent(key -> keys.add(m.stream() + SEPARATOR + key));
    }
    return keys.toArray(String[]::new);
  }
}
