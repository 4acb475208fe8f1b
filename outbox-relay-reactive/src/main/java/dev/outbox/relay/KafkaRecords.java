package dev.outbox.relay;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

/** Shared by the sinks: producer defaults and the record mapping. */
final class KafkaRecords {
  private KafkaRecords() {}

  /**
   * The given producer properties over the relay's defaults: String keys, byte[] values,
   * idempotence on, acks=all, linger.ms=5, max.block.ms=10000 ({@code send} waits that long at
   * most for a topic's metadata: a missing topic stalls the send thread for this long per
   * attempt, not the client default of 60 s).
   */
  static Map<String, Object> producerProperties(Map<String, Object> given) {
    Map<String, Object> props = new HashMap<>();
    props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
    props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
    props.put(ProducerConfig.ACKS_CONFIG, "all");
    props.put(ProducerConfig.LINGER_MS_CONFIG, 5);
    props.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 10_000);
    props.putAll(given);
    return props;
  }

  private static final java.util.regex.Pattern LEGAL_TOPIC =
      java.util.regex.Pattern.compile("[a-zA-Z0-9._-]{1,249}");

  /** Kafka's own rule for topic names; {@code null} when legal, else why not. */
  static @org.jspecify.annotations.Nullable String illegalTopic(String topic) {
    if (topic.equals(".") || topic.equals("..") || !LEGAL_TOPIC.matcher(topic).matches()) {
      return "Invalid topic name '" + topic + "': Kafka topics are 1 to 249 characters of"
          + " [a-zA-Z0-9._-], and not '.' or '..'";
    }
    return null;
  }

  /**
   * The upper bound of the record's size as the producer checks it against {@code
   * max.request.size} before sending (no compression).
   */
  static int estimatedSize(OutboundRecord<?> r) {
    org.apache.kafka.common.header.Header[] headers = toProducerRecord(r).headers().toArray();
    byte[] key = r.key() == null ? null : r.key().getBytes(StandardCharsets.UTF_8);
    return org.apache.kafka.common.record.AbstractRecords.estimateSizeInBytesUpperBound(
        org.apache.kafka.common.record.RecordBatch.CURRENT_MAGIC_VALUE,
        org.apache.kafka.common.record.CompressionType.NONE, key, r.value(), headers);
  }

  static ProducerRecord<String, byte[]> toProducerRecord(OutboundRecord<?> r) {
    List<Header> headers = new ArrayList<>(r.headers().size());
    r.headers().forEach((name, value) ->
        headers.add(new RecordHeader(name, value.getBytes(StandardCharsets.UTF_8))));
    return new ProducerRecord<>(r.topic(), null, r.timestamp().toEpochMilli(), r.key(), r.value(),
        headers);
  }
}
