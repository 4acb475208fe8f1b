package dev.outbox.spring.boot;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.r2dbc.Ksuid;
import dev.outbox.r2dbc.Message;
import dev.outbox.r2dbc.OutboxWriter;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.sdk.testing.exporter.InMemorySpanExporter;
import io.opentelemetry.sdk.trace.SpanProcessor;
import io.opentelemetry.sdk.trace.data.SpanData;
import io.opentelemetry.sdk.trace.export.SimpleSpanProcessor;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Optional;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.header.Header;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.autoconfigure.EnableAutoConfiguration;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.boot.web.server.context.WebServerApplicationContext;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.transaction.reactive.TransactionalOperator;
import org.springframework.web.reactive.function.client.WebClient;
import org.springframework.web.reactive.function.server.RouterFunction;
import org.springframework.web.reactive.function.server.RouterFunctions;
import org.springframework.web.reactive.function.server.ServerResponse;

/**
 * Trace propagation with a real tracer (Boot's OpenTelemetry tracing through the Micrometer
 * bridge, spans kept in memory) on real PostgreSQL and Kafka: an HTTP request that writes to
 * the outbox and the Kafka record the relay publishes for it are one trace.
 */
class TracePropagationTest {
  private static final String TABLE = TestPostgres.uniqueName("traced_outbox");
  private static final String TOPIC = TestPostgres.uniqueName("traced_orders");
  private static final Duration WAIT = Duration.ofSeconds(30);
  /** Every span the application ends, synchronously (no batching delay). */
  private static final InMemorySpanExporter SPANS = InMemorySpanExporter.create();

  private static ConfigurableApplicationContext app;
  private static WebClient http;

  @SpringBootConfiguration
  @EnableAutoConfiguration
  static class App {

    /** Not a SpanExporter bean: Boot would also put it behind its batching processor. */
    @Bean
    SpanProcessor inMemorySpans() {
      return SimpleSpanProcessor.create(SPANS);
    }

    /** POST /orders/{id}: the order's message written in a Spring transaction. */
    @Bean
    RouterFunction<ServerResponse> orders(OutboxWriter outbox, TransactionalOperator tx) {
      return RouterFunctions.route().POST("/orders/{id}", request -> outbox
              .write(Message.builder().stream(TOPIC).key(request.pathVariable("id"))
                  .data("{\"order\":\"" + request.pathVariable("id") + "\"}")
                  .contentType("application/json").build())
              .as(tx::transactional)
              .then(ServerResponse.accepted().build()))
          .build();
    }
  }

  @BeforeAll
  static void start() {
    TestKafka.get().createTopic(TOPIC, 2);
    app = new SpringApplicationBuilder(App.class).web(WebApplicationType.REACTIVE).run(
        "--server.port=0",
        "--spring.main.banner-mode=off",
        "--spring.r2dbc.url=" + TestPostgres.get().url(),
        "--spring.kafka.bootstrap-servers=" + TestKafka.get().bootstrapServers(),
        "--outbox.table=" + TABLE,
        "--outbox.schema.create-if-missing=true",
        "--outbox.relay.poll-interval=100ms",
        "--outbox.relay.shutdown-timeout=2s",
        "--management.tracing.sampling.probability=1.0");
    int port = ((WebServerApplicationContext) app).getWebServer().getPort();
    http = WebClient.create("http://localhost:" + port);
  }

  @AfterAll
  static void stop() {
    if (app != null) {
      app.close();
    }
  }

  private static ConsumerRecord<String, byte[]> consumed(String key) {
    Poll.until("the record of " + key + " is in Kafka", WAIT, () -> TestKafka.get()
        .consume(List.of(TOPIC), 1, Duration.ofMillis(500), Duration.ZERO).stream()
        .anyMatch(r -> key.equals(r.key())));
    return TestKafka.get().consume(List.of(TOPIC), 1, WAIT, Duration.ofMillis(200)).stream()
        .filter(r -> key.equals(r.key())).findFirst().orElseThrow();
  }

  private static Optional<String> header(ConsumerRecord<?, ?> record, String name) {
    Header header = record.headers().lastHeader(name);
    return Optional.ofNullable(header).map(h -> new String(h.value(), StandardCharsets.UTF_8));
  }

  private static Optional<SpanData> span(String traceId, String spanId) {
    return SPANS.getFinishedSpanItems().stream()
        .filter(s -> s.getTraceId().equals(traceId) && s.getSpanId().equals(spanId)).findFirst();
  }

  @Test
  void theKafkaRecordOfAWriteInATracedRequestContinuesTheRequestsTrace() {
    String key = Ksuid.generate().toString();
    // The caller's trace: the server span continues it, and so must the Kafka record.
    String traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    String callerSpanId = "00f067aa0ba902b7";

    http.post().uri("/orders/{id}", key)
        .header("traceparent", "00-" + traceId + "-" + callerSpanId + "-01")
        .retrieve().toBodilessEntity().block(WAIT);

    ConsumerRecord<String, byte[]> record = consumed(key);
    String traceparent = header(record, "traceparent").orElseThrow(
        () -> new AssertionError("the Kafka record has no traceparent header"));
    String[] parts = traceparent.split("-");
    assertThat(parts).hasSize(4);
    assertThat(parts[1]).as("the record's trace id").isEqualTo(traceId);
    String relaySpanId = parts[2];

    Poll.until("the relay's producer span is ended", WAIT,
        () -> span(traceId, relaySpanId).isPresent());
    SpanData relaySpan = span(traceId, relaySpanId).orElseThrow();
    assertThat(relaySpan.getKind()).isEqualTo(SpanKind.PRODUCER);
    assertThat(relaySpan.getName()).isEqualTo(TOPIC + " send");
    assertThat(relaySpan.getAttributes().asMap().toString())
        .contains("messaging.destination.name=" + TOPIC)
        .contains("messaging.message.id=" + header(record, Message.MESSAGE_ID_HEADER).orElseThrow());

    // Its parent is the span that was active at write: the request's server span.
    Poll.until("the server span is ended", WAIT,
        () -> span(traceId, relaySpan.getParentSpanId()).isPresent());
    SpanData writerSpan = span(traceId, relaySpan.getParentSpanId()).orElseThrow();
    assertThat(writerSpan.getKind()).isEqualTo(SpanKind.SERVER);
    assertThat(writerSpan.getParentSpanId()).isEqualTo(callerSpanId);
    assertThat(relaySpan.getStatus().getStatusCode().name()).isNotEqualTo("ERROR");
  }

  @Test
  void aWriteOutsideAnyTraceAddsNoHeaderAndNoSpan() {
    String key = Ksuid.generate().toString();

    app.getBean(OutboxWriter.class)
        .write(Message.builder().stream(TOPIC).key(key).data("untraced").build())
        .as(app.getBean(TransactionalOperator.class)::transactional)
        .block(WAIT);

    ConsumerRecord<String, byte[]> record = consumed(key);
    assertThat(header(record, "traceparent")).isEmpty();
    assertThat(header(record, "tracestate")).isEmpty();
    String messageId = header(record, Message.MESSAGE_ID_HEADER).orElseThrow();
    assertThat(SPANS.getFinishedSpanItems())
        .noneMatch(s -> s.getAttributes().asMap().toString().contains(messageId));
  }

  @Test
  void aTraceparentTheCallerGaveIsKeptAndContinued() {
    String key = Ksuid.generate().toString();
    String own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    app.getBean(OutboxWriter.class)
        .write(Message.builder().stream(TOPIC).key(key).header("traceparent", own)
            .data("own trace").build())
        .as(app.getBean(TransactionalOperator.class)::transactional)
        .block(WAIT);

    String[] parts = header(consumed(key), "traceparent").orElseThrow().split("-");
    assertThat(parts[1]).isEqualTo("0af7651916cd43dd8448eb211c80319c");
    Poll.until("the relay's span is ended", WAIT,
        () -> span(parts[1], parts[2]).isPresent());
    assertThat(span(parts[1], parts[2]).orElseThrow().getParentSpanId())
        .isEqualTo("b7ad6b7169203331");
  }
}
