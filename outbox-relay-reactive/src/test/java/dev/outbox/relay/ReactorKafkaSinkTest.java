package dev.outbox.relay;

import java.util.Map;

class ReactorKafkaSinkTest extends RecordSinkContract {
  @Override
  RecordSink create(Map<String, Object> producerProperties, int maxInFlight) {
    return ReactorKafkaSink.create(producerProperties, maxInFlight);
  }

  @Override
  int bufferedAhead() {
    return 256; // reactor-kafka prefetches 256 records into its send queue
  }
}
