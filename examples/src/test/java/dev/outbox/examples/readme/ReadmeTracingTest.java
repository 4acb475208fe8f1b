package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;

import dev.outbox.examples.webflux.OrderServiceApplication;
import dev.outbox.testing.Poll;
import dev.outbox.testing.TestKafka;
import dev.outbox.testing.TestPostgres;
import io.opentelemetry.api.trace.SpanKind;
import io.opentelemetry.sdk.testing.exporter.InMemorySpanExporter;
import io.opentelemetry.sdk.trace.SpanProcessor;
import io.opentelemetry.sdk.trace.data.SpanData;
import io.opentelemetry.sdk.trace.export.SimpleSpanProcessor;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.junit.jupiter.api.Test;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.boot.web.server.context.WebServerApplicationContext;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.web.reactive.function.client.WebClient;

/**
 * README "Tracing": the example service with OpenTelemetry tracing (Boot's, through the
 * Micrometer bridge) and the README's properties: the request that places an order and the
 * Kafka record of its event are one trace.
 */
class ReadmeTracingTest {
  private static final InMemorySpanExporter SPANS = InMemorySpanExporter.create();
  private static final Duration WAIT = Duration.ofSeconds(30);

  /** Ended spans in memory, synchronously (what an exporter to a tracing backend would get). */
  @Configuration(proxyBeanMethods = false)
  static class InMemorySpans {
    @Bean
    SpanProcessor inMemorySpans() {
      return SimpleSpanProcessor.create(SPANS);
    }
  }

  private static List<String> readmeProperties() throws IOException {
    Properties properties = new Properties();
    try (InputStream in = ReadmeTracingTest.class.getResourceAsStream("/readme/tracing.properties")) {
      properties.load(in);
    }
    List<String> args = new ArrayList<>();
    properties.forEach((name, value) -> args.add("--" + name + "=" + value));
    return args;
  }

  private static SpanData span(String traceId, String spanId) {
    return SPANS.getFinishedSpanItems().stream()
        .filter(s -> s.getTraceId().equals(traceId) && s.getSpanId().equals(spanId))
        .findFirst().orElse(null);
  }

  @Test
  void theOrderRequestAndItsKafkaRecordAreOneTrace() throws IOException {
    String table = TestPostgres.uniqueName("traced_order_outbox");
    String topic = TestPostgres.uniqueName("traced_orders");
    TestKafka.get().createTopic(topic, 1);
    List<String> args = new ArrayList<>(readmeProperties());
    args.addAll(List.of("--server.port=0", "--spring.main.banner-mode=off",
        "--spring.r2dbc.url=" + TestPostgres.get().url(),
        "--spring.kafka.bootstrap-servers=" + TestKafka.get().bootstrapServers(),
        "--outbox.table=" + table, "--orders.topic=" + topic,
        "--outbox.relay.shutdown-timeout=2s"));
    try (ConfigurableApplicationContext app = new SpringApplicationBuilder(
        OrderServiceApplication.class, InMemorySpans.class).web(WebApplicationType.REACTIVE)
        .run(args.toArray(String[]::new))) {
      int port = ((WebServerApplicationContext) app).getWebServer().getPort();
      String traceId = "0af7651916cd43dd8448eb211c80319c";

      Map<?, ?> created = WebClient.create("http://localhost:" + port).post().uri("/orders")
          .header("traceparent", "00-" + traceId + "-b7ad6b7169203331-01")
          .bodyValue(Map.of("customer", "trace", "totalCents", 100))
          .retrieve().bodyToMono(Map.class).block(WAIT);
      String orderId = String.valueOf(created.get("orderId"));

      ConsumerRecord<String, byte[]> record = TestKafka.get()
          .consume(List.of(topic), 1, WAIT, Duration.ofMillis(200)).stream()
          .filter(r -> orderId.equals(r.key())).findFirst().orElseThrow();
      String[] traceparent = new String(record.headers().lastHeader("traceparent").value(),
          StandardCharsets.UTF_8).split("-");
      assertThat(traceparent[1]).as("the Kafka record's trace id").isEqualTo(traceId);
      Poll.until("the relay's span is ended", WAIT, () -> span(traceId, traceparent[2]) != null);
      SpanData relay = span(traceId, traceparent[2]);
      assertThat(relay.getKind()).isEqualTo(SpanKind.PRODUCER);
      Poll.until("the request's span is ended", WAIT,
          () -> span(traceId, relay.getParentSpanId()) != null);
      assertThat(span(traceId, relay.getParentSpanId()).getKind()).isEqualTo(SpanKind.SERVER);
    }
  }
}
