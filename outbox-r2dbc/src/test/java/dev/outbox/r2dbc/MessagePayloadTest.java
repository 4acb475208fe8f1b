package dev.outbox.r2dbc;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.Timestamp;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The payload conveniences of {@link Message.Builder}: text, JSON, protobuf. */
class MessagePayloadTest {

  /** Serialized by Jackson through its public accessors. */
  public record Order(String id, long totalCents, List<String> items) {}

  /** Jackson refuses a bean with no properties. */
  static final class Opaque {}

  @Test
  void textIsUtf8WithATextContentType() {
    Message m = Message.builder().stream("s").data("grüße €").build();
    assertThat(m.data()).isEqualTo("grüße €".getBytes(StandardCharsets.UTF_8));
    assertThat(m.contentType()).isEqualTo("text/plain; charset=utf-8");
  }

  @Test
  void anExplicitContentTypeWinsBeforeOrAfter() {
    assertThat(Message.builder().stream("s").contentType("text/csv").data("a,b").build()
        .contentType()).isEqualTo("text/csv");
    assertThat(Message.builder().stream("s").data("{}").contentType("application/json").build()
        .contentType()).isEqualTo("application/json");
    assertThat(Message.builder().stream("s").contentType("x/y").json(Map.of()).build()
        .contentType()).isEqualTo("x/y");
  }

  @Test
  void theLastPayloadMethodDecidesTheImpliedContentType() {
    Message m = Message.builder().stream("s").data("text").data(new byte[] {1}).build();
    assertThat(m.contentType()).isEqualTo(Message.DEFAULT_CONTENT_TYPE);
    assertThat(m.data()).containsExactly(1);
  }

  @Test
  void nullTextIsNamed() {
    assertThatThrownBy(() -> Message.builder().stream("s").data((String) null).build())
        .isInstanceOf(InvalidMessageException.class)
        .hasMessageContaining("data is required");
  }

  @Test
  void jsonIsSerializedByJackson() {
    Message m = Message.builder().stream("s").json(new Order("o-1", 4200, List.of("tea"))).build();
    assertThat(new String(m.data(), StandardCharsets.UTF_8))
        .isEqualTo("{\"id\":\"o-1\",\"totalCents\":4200,\"items\":[\"tea\"]}");
    assertThat(m.contentType()).isEqualTo("application/json");
  }

  @Test
  void aValueJacksonCannotSerializeIsNamedAtBuild() {
    Message.Builder builder = Message.builder().stream("s").json(new Opaque());
    assertThatThrownBy(builder::build)
        .isInstanceOf(InvalidMessageException.class)
        .hasMessageContaining("json value of " + Opaque.class.getName())
        .hasMessageContaining("cannot be serialized");
  }

  @Test
  void aNullJsonValueIsNamed() {
    assertThatThrownBy(() -> Message.builder().stream("s").json(null).build())
        .isInstanceOf(InvalidMessageException.class)
        .hasMessage("Message json value is null");
  }

  @Test
  void aLaterPayloadReplacesAnInvalidOne() {
    Message m = Message.builder().stream("s").json(new Opaque()).data("ok").build();
    assertThat(m.contentType()).isEqualTo(Message.TEXT_CONTENT_TYPE);
  }

  @Test
  void protobufMessagesAreTheirBytes() throws Exception {
    Timestamp ts = Timestamp.newBuilder().setSeconds(1_700_000_000L).setNanos(5).build();
    Message m = Message.builder().stream("s").protobuf(ts).build();
    assertThat(Timestamp.parseFrom(m.data())).isEqualTo(ts);
    assertThat(m.contentType()).isEqualTo("application/x-protobuf");
    assertThatThrownBy(() -> Message.builder().stream("s").protobuf(null).build())
        .isInstanceOf(InvalidMessageException.class)
        .hasMessage("Message protobuf value is null");
  }
}
