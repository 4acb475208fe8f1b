package dev.outbox.relay;

import dev.outbox.r2dbc.InvalidConfigurationException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.AbstractRecords;
import org.apache.kafka.common.record.CompressionType;
import org.apache.kafka.common.record.RecordBatch;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.jspecify.annotations.Nullable;

/** Shared by the sinks: producer defaults and validation, and the record mapping. */
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

  /**
   * {@code given} (unchanged, as an immutable copy) after checking it, over the relay's defaults,
   * against the producer's own definitions, so that {@code acks=banana} or {@code linger.ms=-1}
   * fail when the options are built rather than in every send of a running relay.
   *
   * @throws InvalidConfigurationException naming the property
   */
  static Map<String, Object> validated(Map<String, Object> given) {
    Map<String, Object> parsed;
    try {
      Map<String, Object> effective = producerProperties(given);
      parsed = ProducerConfig.configDef().parse(effective);
      // The producer's own cross-checks (acks=1 or retries=0 with idempotence, ...).
      new ProducerConfig(effective);
    } catch (ConfigException e) {
      throw new InvalidConfigurationException("Invalid Kafka producer property: " + e.getMessage(), e);
    }
    if (parsed.get(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG) instanceof List<?> servers && servers.isEmpty()) {
      throw new InvalidConfigurationException("Kafka producer property bootstrap.servers is missing:"
          + " set it to the broker addresses, e.g. localhost:9092");
    }
    return Map.copyOf(given);
  }

  /** The producer's {@code max.request.size} in the effective properties. */
  static int maxRequestSize(Map<String, Object> effective) {
    Object parsed = ProducerConfig.configDef().parse(effective).get(ProducerConfig.MAX_REQUEST_SIZE_CONFIG);
    return (Integer) parsed;
  }

  /**
   * Kafka's own rule for topic names ({@code [a-zA-Z0-9._-]{1,249}}, not {@code .} or {@code
   * ..}); {@code null} when legal, else why not. A loop, not a regex: it runs for every record.
   */
  static @Nullable String illegalTopic(String topic) {
    boolean legal = !topic.isEmpty() && topic.length() <= 249 && !topic.equals(".") && !topic.equals("..");
    for (int i = 0; legal && i < topic.length(); i++) {
      char c = topic.charAt(i);
      legal = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
          || c == '.' || c == '_' || c == '-';
    }
    return legal ? null : "Invalid topic name '" + topic + "': Kafka topics are 1 to 249 characters of"
        + " [a-zA-Z0-9._-], and not '.' or '..'";
  }

  /**
   * The upper bound of the record's size as the producer checks it against {@code
   * max.request.size} before sending (no compression).
   */
  static int estimatedSize(ProducerRecord<String, byte[]> r) {
    byte[] key = r.key() == null ? null : r.key().getBytes(StandardCharsets.UTF_8);
    return AbstractRecords.estimateSizeInBytesUpperBound(RecordBatch.CURRENT_MAGIC_VALUE,
        CompressionType.NONE, key, r.value(), r.headers().toArray());
  }

  static ProducerRecord<String, byte[]> toProducerRecord(OutboundRecord<?> r) {
    List<Header> headers = new ArrayList<>(r.headers().size());
    r.headers().forEach((name, value) ->
        headers.add(new RecordHeader(name, value.getBytes(StandardCharsets.UTF_8))));
    return new ProducerRecord<>(r.topic(), null, r.timestamp().toEpochMilli(), r.key(), r.value(),
        headers);
  }
}
