package dev.outbox.relay;

import dev.outbox.r2dbc.internal.ClaimedBatch;
import dev.outbox.r2dbc.Message;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.jspecify.annotations.Nullable;

/** A claimed, decoded batch whose records are on their way; settled when the last one answers. */
final class BatchInFlight {
  /** Correlation of one record: its batch, and when it was handed to the sink. */
  record RecordRef(BatchInFlight batch, long handedOffNanos) {}

  final ClaimedBatch claim;
  private final List<Message> messages;
  private final AtomicInteger pending;
  private final AtomicReference<@Nullable Throwable> fatal = new AtomicReference<>();
  private final AtomicReference<@Nullable Throwable> retriable = new AtomicReference<>();

  BatchInFlight(ClaimedBatch claim, List<Message> messages) {
    this.claim = claim;
    this.messages = messages;
    this.pending = new AtomicInteger(messages.size());
  }

  /** The Kafka records of this batch, in batch order. */
  List<OutboundRecord<RecordRef>> records() {
    long now = System.nanoTime();
    RecordRef ref = new RecordRef(this, now);
    List<OutboundRecord<RecordRef>> records = new ArrayList<>(messages.size());
    for (Message m : messages) {
      Map<String, String> headers = new LinkedHashMap<>(m.headers());
      headers.put(Message.MESSAGE_ID_HEADER, m.id());
      headers.put(Message.CONTENT_TYPE_HEADER, m.contentType());
      records.add(new OutboundRecord<>(m.stream(), m.key().orElse(null), m.data(), m.time(),
          headers, ref));
    }
    return records;
  }

  /** Records one failed record; the first failure of each kind is kept as the reason. */
  void failed(Throwable error, boolean isFatal) {
    (isFatal ? fatal : retriable).compareAndSet(null, error);
  }

  /** Counts one answered record; true for the last one. */
  boolean answered() {
    return pending.decrementAndGet() == 0;
  }

  @Nullable Throwable fatal() {
    return fatal.get();
  }

  @Nullable Throwable retriable() {
    return retriable.get();
  }
}
