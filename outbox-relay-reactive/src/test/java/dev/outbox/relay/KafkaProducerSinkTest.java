package dev.outbox.relay;

import java.util.Map;

class KafkaProducerSinkTest extends RecordSinkContract {
  @Override
  RecordSink create(Map<String, Object> producerProperties, int maxInFlight) {
    return KafkaProducerSink.create(producerProperties, maxInFlight);
  }

  @Override
  int bufferedAhead() {
    return 0; // no buffer: flatMap concurrency is the limit
  }
}
