package dev.outbox.spring.boot;

import dev.outbox.r2dbc.ContextHeaders;
import dev.outbox.r2dbc.Message;
import dev.outbox.relay.RecordInterceptor;
import io.micrometer.observation.Observation;
import io.micrometer.tracing.Span;
import io.micrometer.tracing.Tracer;
import io.micrometer.tracing.handler.TracingObservationHandler;
import io.micrometer.tracing.propagation.Propagator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.jspecify.annotations.Nullable;
import reactor.util.context.ContextView;

/**
 * Trace propagation through the outbox with Micrometer Tracing (the OpenTelemetry or the Brave
 * bridge):
 *
 * <ul>
 *   <li>as the writer's {@link ContextHeaders}: the span active at {@code write} is the span of
 *       the current {@link Observation} in the Reactor Context (where Spring WebFlux and {@code
 *       Micrometer.observation(...)} put it), else the tracer's current span; its context is
 *       stored with each message by the application's {@link Propagator} (W3C {@code traceparent}
 *       and {@code tracestate} with Boot's defaults). No active span, or a no-op one: nothing is
 *       added.
 *   <li>as the relay's {@link RecordInterceptor}: a message that carries a stored trace context
 *       is published inside a PRODUCER span, child of the stored context, named {@code "<topic>
 *       send"}, ended when Kafka answers (with the error when the send failed); the record carries
 *       that span's context instead of the stored one, so a consumer continues the same trace.
 *       Messages without a stored trace context go as they are, without a span.
 * </ul>
 */
final class MicrometerTracePropagation implements ContextHeaders, RecordInterceptor {
  /**
   * Where Spring WebFlux and Reactor's {@code Micrometer.observation} keep the current
   * Observation in the Reactor Context ({@code ObservationThreadLocalAccessor.KEY}; spelled out
   * so that context-propagation need not be on the classpath).
   */
  static final String OBSERVATION_KEY = "micrometer.observation";

  /** Headers that carry a trace context in the formats Boot propagates: W3C, B3 single, B3. */
  private static final List<String> TRACE_HEADERS = List.of("traceparent", "b3", "X-B3-TraceId");

  private static final Propagator.Getter<Map<String, String>> GET = Map::get;
  private static final Propagator.Setter<Map<String, String>> SET = Map::put;

  private final Tracer tracer;
  private final Propagator propagator;

  MicrometerTracePropagation(Tracer tracer, Propagator propagator) {
    this.tracer = tracer;
    this.propagator = propagator;
  }

  @Override
  public Map<String, String> headers(ContextView context) {
    Span span = activeSpan(context);
    // Not isNoop(): the OpenTelemetry bridge calls every unsampled span a no-op, and an
    // unsampled trace must travel on too (with its sampling decision), or 90 % of consumers at
    // Boot's default sampling start a trace of their own (review finding).
    if (span == null || span.context().traceId() == null || span.context().traceId().isEmpty()) {
      return Map.of();
    }
    Map<String, String> carrier = new LinkedHashMap<>();
    propagator.inject(span.context(), carrier, SET);
    return carrier;
  }

  private @Nullable Span activeSpan(ContextView context) {
    Object current = context.getOrDefault(OBSERVATION_KEY, null);
    if (current instanceof Observation observation && !observation.isNoop()) {
      TracingObservationHandler.TracingContext tracing =
          observation.getContextView().get(TracingObservationHandler.TracingContext.class);
      if (tracing != null && tracing.getSpan() != null) {
        return tracing.getSpan();
      }
    }
    return tracer.currentSpan();
  }

  @Override
  public @Nullable Interception intercept(Message message, Map<String, String> headers) {
    if (!carriesTrace(message.headers())) {
      return null;
    }
    Span span = propagator.extract(message.headers(), GET)
        .name(message.stream() + " send")
        .kind(Span.Kind.PRODUCER)
        .remoteServiceName("kafka")
        .tag("messaging.system", "kafka")
        .tag("messaging.operation", "publish")
        .tag("messaging.destination.name", message.stream())
        .tag("messaging.message.id", message.id())
        .start();
    Map<String, String> sent = new LinkedHashMap<>(headers);
    propagator.inject(span.context(), sent, SET);
    return new SpanInterception(span, Map.copyOf(sent));
  }

  private static boolean carriesTrace(Map<String, String> headers) {
    for (String name : TRACE_HEADERS) {
      if (headers.containsKey(name)) {
        return true;
      }
    }
    return false;
  }

  /** One record's producer span and the headers that carry it. */
  private record SpanInterception(Span span, Map<String, String> headers) implements Interception {
    @Override
    public void answered(@Nullable Throwable error) {
      if (error != null) {
        span.error(error);
      }
      span.end();
    }
  }

  @Override
  public String toString() {
    return "MicrometerTracePropagation[" + tracer.getClass().getSimpleName() + "]";
  }
}
