package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Message;
import java.nio.charset.StandardCharsets;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;

/** What a consumer saw, checked against what was written. */
final class Delivery {
  final Map<String, Integer> timesSeen = new HashMap<>();
  final int records;

  Delivery(List<ConsumerRecord<String, byte[]>> consumed) {
    records = consumed.size();
    for (ConsumerRecord<String, byte[]> r : consumed) {
      timesSeen.merge(messageId(r), 1, Integer::sum);
    }
  }

  static String messageId(ConsumerRecord<String, byte[]> r) {
    Header h = r.headers().lastHeader(Message.MESSAGE_ID_HEADER);
    return h == null ? "<none>" : new String(h.value(), StandardCharsets.UTF_8);
  }

  int duplicates() {
    return records - timesSeen.size();
  }

  /** Asserts every message arrived at least once, and nothing else did. */
  void assertAtLeastOnce(List<Message> expected) {
    Map<String, Message> byId = new HashMap<>();
    expected.forEach(m -> byId.put(m.id(), m));
    List<String> missing = byId.keySet().stream().filter(id -> !timesSeen.containsKey(id)).toList();
    List<String> unexpected = timesSeen.keySet().stream().filter(id -> !byId.containsKey(id)).toList();
    assertThat(missing).as("%d of %d messages never arrived (%d records consumed), e.g. %s",
        missing.size(), byId.size(), records, missing.stream().limit(5).toList()).isEmpty();
    assertThat(unexpected).as("records that were never written or were rolled back").isEmpty();
  }

  /** Asserts every field of each consumed record against the written message. */
  static void assertSameContent(List<ConsumerRecord<String, byte[]>> consumed, List<Message> expected) {
    Map<String, Message> byId = new HashMap<>();
    expected.forEach(m -> byId.put(m.id(), m));
    for (ConsumerRecord<String, byte[]> r : consumed) {
      Message m = byId.get(messageId(r));
      assertThat(m).as("message for record %s", r).isNotNull();
      assertThat(r.topic()).isEqualTo(m.stream());
      assertThat(r.key()).isEqualTo(m.key().orElse(null));
      assertThat(r.value()).isEqualTo(m.data());
      assertThat(r.timestamp()).isEqualTo(m.time().toEpochMilli());
      Map<String, String> headers = new HashMap<>();
      for (Header h : r.headers()) {
        headers.put(h.key(), new String(h.value(), StandardCharsets.UTF_8));
      }
      Map<String, String> want = new HashMap<>(m.headers());
      want.put(Message.MESSAGE_ID_HEADER, m.id());
      want.put(Message.CONTENT_TYPE_HEADER, m.contentType());
      assertThat(headers).isEqualTo(want);
    }
  }
}
