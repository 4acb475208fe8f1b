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
   * idempotence on, acks=all.
   */
  static Map<String, Object> producerProperties(Map<String, Object> given) {
    Map<String, Object> props = new HashMap<>();
    props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
    props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
    props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
    props.put(ProducerConfig.ACKS_CONFIG, "all");
    props.put(ProducerConfig.LINGER_MS_CONFIG, 5);
    props.putAll(given);
    return props;
  }

  static ProducerRecord<String, byte[]> toProducerRecord(OutboundRecord<?> r) {
    List<Header> headers = new ArrayList<>(r.headers().size());
    r.headers().forEach((name, value) ->
        headers.add(new RecordHeader(name, value.getBytes(StandardCharsets.UTF_8))));
    return new ProducerRecord<>(r.topic(), null, r.timestamp().toEpochMilli(), r.key(), r.value(),
        headers);
  }
}
