package dev.outbox.r2dbc.internal;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

class LoggedBatchTest {
  private static final Instant WRITTEN = Instant.parse("2026-12-03T22:58:01.123456Z");

  @Test
  void aBatchReadsBackAsTheRowTheRelayPublishes() {
    byte[] raw = {1, 2, 3, 0, -1};
    byte[] content = LoggedBatch.encode("2Kq0x7gYb1u3tT2mVNj0Z5v3Wq1", 3, WRITTEN,
        new String[] {"orders\u001forder-1", "ü-key"}, raw);
    ByteBuffer in = ByteBuffer.wrap(withFrame(content)); // the decoder reads inside a frame
    in.position(4);

    LoggedBatch.Decoded decoded = LoggedBatch.decode(in, content.length);

    assertThat(in.position()).as("the content read to its end, no further").isEqualTo(4 + content.length);
    ClaimedBatch row = decoded.row();
    assertThat(row.batchId()).isEqualTo("2Kq0x7gYb1u3tT2mVNj0Z5v3Wq1");
    assertThat(row.messageCount()).isEqualTo(3);
    assertThat(row.writeRetries()).isZero();
    assertThat(row.rawData()).containsExactly(raw);
    assertThat(row.insertTime()).isEqualTo(WRITTEN);
    assertThat(row.leaseToken()).isEqualTo(RelayStore.LOGGED_ONLY);
    assertThat(decoded.keys()).containsExactly("orders\u001forder-1", "ü-key");
  }

  @Test
  void aBatchWithoutKeysReadsBackWithoutKeys() {
    byte[] content = LoggedBatch.encode("id", 1, WRITTEN, new String[0], new byte[0]);
    LoggedBatch.Decoded decoded = LoggedBatch.decode(ByteBuffer.wrap(content), content.length);
    assertThat(decoded.keys()).isEmpty();
    assertThat(decoded.row().rawData()).isEmpty();
  }

  @Test
  void anUnknownFormatIsANamedErrorNotABatch() {
    byte[] content = LoggedBatch.encode("id", 1, WRITTEN, new String[0], new byte[] {7});
    content[0] = 2;
    assertThatThrownBy(() -> LoggedBatch.decode(ByteBuffer.wrap(content), content.length))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("unknown outbox message format 2");
  }

  @Test
  void aCutContentIsANamedErrorNotABatch() {
    byte[] content = LoggedBatch.encode("id", 1, WRITTEN, new String[] {"k"}, new byte[] {7, 8});
    for (int cut = 1; cut < content.length; cut++) {
      byte[] shorter = Arrays.copyOf(content, cut);
      assertThatThrownBy(() -> LoggedBatch.decode(ByteBuffer.wrap(shorter), shorter.length))
          .as("cut at %d", cut)
          .isInstanceOf(IllegalArgumentException.class);
    }
  }

  @Test
  void thePrefixNamesTheSlot() {
    assertThat(LoggedBatch.prefix("orders_relay")).isEqualTo("dev.outbox:orders_relay");
    assertThat(List.of(LoggedBatch.prefix("a"), LoggedBatch.prefix("b"))).doesNotHaveDuplicates();
    assertThat(LoggedBatch.prefix("ü").getBytes(StandardCharsets.UTF_8)).isNotEmpty();
  }

  private static byte[] withFrame(byte[] content) {
    byte[] framed = new byte[content.length + 8];
    System.arraycopy(content, 0, framed, 4, content.length);
    return framed;
  }
}
