package dev.outbox.r2dbc;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Instant;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.HexFormat;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class KsuidTest {

  @Test
  void knownVectorParsesToItsBytes() {
    Ksuid id = Ksuid.parse("0ujtsYcgvSTl8PAuAdqWYSMnLOv");
    assertThat(HexFormat.of().withUpperCase().formatHex(id.toBytes()))
        .isEqualTo("0669F7EFB5A1CD34B5F99D1154FB6853345C9735");
    assertThat(id.time()).isEqualTo(Instant.ofEpochSecond(Ksuid.EPOCH_SECONDS + 0x0669F7EFL));
  }

  @Test
  void knownVectorFormatsFromItsBytes() {
    byte[] bytes = HexFormat.of().parseHex("0669F7EFB5A1CD34B5F99D1154FB6853345C9735");
    assertThat(Ksuid.fromBytes(bytes).toString()).isEqualTo("0ujtsYcgvSTl8PAuAdqWYSMnLOv");
  }

  @Test
  void extremesRoundTrip() {
    assertThat(Ksuid.fromBytes(new byte[20]).toString()).isEqualTo("000000000000000000000000000");
    byte[] max = new byte[20];
    java.util.Arrays.fill(max, (byte) 0xff);
    assertThat(Ksuid.fromBytes(max).toString()).isEqualTo("aWgEPTl1tmebfsQzFP4bxwgy80V");
    assertThat(Ksuid.parse("aWgEPTl1tmebfsQzFP4bxwgy80V").toBytes()).isEqualTo(max);
  }

  @Test
  void generatedIdsRoundTripAndAreUnique() {
    var seen = new HashSet<String>();
    for (int i = 0; i < 10_000; i++) {
      Ksuid id = Ksuid.generate();
      String text = id.toString();
      assertThat(text).hasSize(27);
      assertThat(Ksuid.parse(text)).isEqualTo(id);
      assertThat(Ksuid.fromBytes(id.toBytes()).toString()).isEqualTo(text);
      assertThat(seen.add(text)).as("duplicate id %s", text).isTrue();
    }
  }

  @Test
  void idsSortByTimeAsStringsAndValues() {
    List<Ksuid> ids = new ArrayList<>();
    Instant start = Instant.parse("2024-01-01T00:00:00Z");
    for (int i = 0; i < 100; i++) {
      ids.add(Ksuid.generate(start.plusSeconds(i * 3_600L)));
    }
    for (int i = 1; i < ids.size(); i++) {
      assertThat(ids.get(i - 1).toString()).isLessThan(ids.get(i).toString());
      assertThat(ids.get(i - 1)).isLessThan(ids.get(i));
      assertThat(ids.get(i).time()).isEqualTo(start.plusSeconds(i * 3_600L));
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"", "0ujtsYcgvSTl8PAuAdqWYSMnLO", "0ujtsYcgvSTl8PAuAdqWYSMnLOvX",
      "0ujtsYcgvSTl8PAuAdqWYSMnLO!", "0ujtsYcgvSTl8PAuAdqWYSMnLO-", "aWgEPTl1tmebfsQzFP4bxwgy80W",
      "zzzzzzzzzzzzzzzzzzzzzzzzzzz", "0ujtsYcgvSTl8PAuAdqWYSMnLÖv"})
  void malformedStringsAreRejected(String text) {
    assertThatThrownBy(() -> Ksuid.parse(text))
        .isInstanceOf(InvalidMessageException.class)
        .hasMessageContaining("Ksuid");
  }

  @Test
  void wrongByteCountIsRejected() {
    assertThatThrownBy(() -> Ksuid.fromBytes(new byte[19]))
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("20 bytes");
  }
}
