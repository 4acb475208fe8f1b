package dev.outbox.relay;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Future;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.Callback;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.metrics.KafkaMetric;
import reactor.kafka.sender.SenderOptions;
import reactor.kafka.sender.SenderRecord;
import reactor.kafka.sender.internals.ProducerFactory;

/**
 * The producer under {@link ReactorKafkaSink}: applies the {@link SendGuard} of each record's
 * correlation at the moment reactor-kafka calls {@code send} (after its own queue, in send
 * order), which no operator upstream of reactor-kafka can do. Everything else is delegated.
 */
final class GuardedProducer<K, V> implements Producer<K, V> {
  /** Creates reactor-kafka's producer and wraps it. */
  static final ProducerFactory FACTORY = new ProducerFactory() {
    @Override
    public <K2, V2> Producer<K2, V2> createProducer(SenderOptions<K2, V2> options) {
      return new GuardedProducer<>(ProducerFactory.INSTANCE.createProducer(options));
    }
  };

  private final Producer<K, V> delegate;

  GuardedProducer(Producer<K, V> delegate) {
    this.delegate = delegate;
  }

  @Override
  public Future<RecordMetadata> send(ProducerRecord<K, V> record, Callback callback) {
    SendGuard guard = record instanceof SenderRecord<?, ?, ?> sent
        ? SendGuard.of(sent.correlationMetadata()) : null;
    if (guard == null) {
      return delegate.send(record, callback);
    }
    if (guard.sendAbandoned()) {
      Exception notSent = new SendGuard.EarlierRecordFailedException();
      callback.onCompletion(null, notSent);
      return CompletableFuture.failedFuture(notSent);
    }
    try {
      return delegate.send(record, (metadata, error) -> {
        if (error != null) {
          guard.sendFailed();
        }
        callback.onCompletion(metadata, error);
      });
    } catch (RuntimeException error) {
      guard.sendFailed();
      throw error;
    }
  }

  @Override
  public Future<RecordMetadata> send(ProducerRecord<K, V> record) {
    return send(record, (metadata, error) -> { });
  }

  @Override
  public void initTransactions() {
    delegate.initTransactions();
  }

  @Override
  public void beginTransaction() {
    delegate.beginTransaction();
  }

  @Override
  public void sendOffsetsToTransaction(Map<TopicPartition, OffsetAndMetadata> offsets,
      ConsumerGroupMetadata groupMetadata) {
    delegate.sendOffsetsToTransaction(offsets, groupMetadata);
  }

  @Override
  public void commitTransaction() {
    delegate.commitTransaction();
  }

  @Override
  public void abortTransaction() {
    delegate.abortTransaction();
  }

  @Override
  public void registerMetricForSubscription(KafkaMetric metric) {
    delegate.registerMetricForSubscription(metric);
  }

  @Override
  public void unregisterMetricFromSubscription(KafkaMetric metric) {
    delegate.unregisterMetricFromSubscription(metric);
  }

  @Override
  public void flush() {
    delegate.flush();
  }

  @Override
  public List<PartitionInfo> partitionsFor(String topic) {
    return delegate.partitionsFor(topic);
  }

  @Override
  public Map<MetricName, ? extends Metric> metrics() {
    return delegate.metrics();
  }

  @Override
  public Uuid clientInstanceId(Duration timeout) {
    return delegate.clientInstanceId(timeout);
  }

  @Override
  public void close() {
    delegate.close();
  }

  @Override
  public void close(Duration timeout) {
    delegate.close(timeout);
  }
}
