package dev.outbox.relay;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import java.util.Map;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.internals.Topic;
import org.apache.kafka.common.record.AbstractRecords;
import org.apache.kafka.common.record.CompressionType;
import org.apache.kafka.common.record.RecordBatch;
import org.junit.jupiter.api.Test;

class KafkaRecordsTest {
  @Test
  void topicNamesAreJudgedAsKafkaItselfJudgesThem() {
    List<String> names = List.of("orders", "a", "A.b_c-9", ".", "..", "...", "", " ", "bad topic!",
        "ünicode", "tab\t", "slash/x", "x".repeat(249), "x".repeat(250), "a+b", "a:b");
    for (String name : names) {
      boolean kafkaLegal;
      try {
        Topic.validate(name);
        kafkaLegal = true;
      } catch (InvalidTopicException e) {
        kafkaLegal = false;
      }
      String ours = KafkaRecords.illegalTopic(name);
      assertThat(ours == null).as("'%s' legal", name).isEqualTo(kafkaLegal);
      if (ours != null) {
        assertThat(ours).contains("'" + name + "'");
      }
    }
  }

  @Test
  void theSizeEstimateIsTheProducersForTheRecordAsSent() {
    OutboundRecord<String> outbound = new OutboundRecord<>("orders", "key-1", new byte[300],
        java.time.Instant.ofEpochMilli(1_000), Map.of("message_id", "2a", "content_type", "text/plain"), "c");
    ProducerRecord<String, byte[]> record = KafkaRecords.toProducerRecord(outbound);
    int expected = AbstractRecords.estimateSizeInBytesUpperBound(RecordBatch.CURRENT_MAGIC_VALUE,
        CompressionType.NONE, "key-1".getBytes(java.nio.charset.StandardCharsets.UTF_8), new byte[300],
        record.headers().toArray());
    assertThat(KafkaRecords.estimatedSize(record)).isEqualTo(expected).isGreaterThan(300 + 2 + 4 + 10);
    assertThat(record.headers().lastHeader("message_id").value()).containsExactly('2', 'a');
    assertThat(record.timestamp()).isEqualTo(1_000L);
  }
}
