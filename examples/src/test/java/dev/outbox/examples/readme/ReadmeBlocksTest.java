package dev.outbox.examples.readme;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Every Java block of the README is a tagged region of a test in this package, character for
 * character (after removing the region's common indentation), so the README shows only code
 * that compiles and runs. A block is introduced by {@code <!-- snippet: name -->} on the line
 * before its fence; the region is {@code // tag::name[]} ... {@code // end::name[]}.
 *
 * <p>To change a README example, change the test code, then paste the region into the README.
 */
class ReadmeBlocksTest {
  private static final Path README = Path.of("..", "README.md");
  private static final Path SNIPPETS = Path.of("src", "test", "java", "dev", "outbox", "examples",
      "readme");
  private static final Pattern MARKER = Pattern.compile("<!-- snippet: ([\\w-]+) -->");
  private static final Pattern REGION = Pattern.compile(
      "// tag::([\\w-]+)\\[\\]\\n(.*?)\\n[ \\t]*// end::\\1\\[\\]", Pattern.DOTALL);
  /** Properties blocks: regions of {@code .properties} files here, run by their tests. */
  private static final Path PROPERTY_SNIPPETS = Path.of("src", "test", "resources", "readme");
  private static final Pattern PROPERTY_REGION = Pattern.compile(
      "# tag::([\\w-]+)\\[\\]\\n(.*?)\\n# end::\\1\\[\\]", Pattern.DOTALL);

  @Test
  void everyJavaBlockIsATestedRegion() throws IOException {
    assertThat(README).as("README at the repository root (tests run in examples/)").exists();
    Map<String, String> blocks = javaBlocks(Files.readString(README, StandardCharsets.UTF_8));
    Map<String, String> regions = regions();

    assertThat(blocks).as("README java blocks").isNotEmpty();
    for (Map.Entry<String, String> block : blocks.entrySet()) {
      assertThat(regions).as("a region tagged '%s' in %s", block.getKey(), SNIPPETS)
          .containsKey(block.getKey());
      assertThat(block.getValue()).as("README block '%s' (copy it from the test region)",
          block.getKey()).isEqualTo(regions.get(block.getKey()));
    }
  }

  @Test
  void everyPropertiesBlockIsATestedRegion() throws IOException {
    Map<String, String> blocks = blocks(Files.readString(README, StandardCharsets.UTF_8),
        "properties");
    Map<String, String> regions = regions(PROPERTY_SNIPPETS, ".properties", PROPERTY_REGION);

    assertThat(blocks).as("README properties blocks").isNotEmpty();
    for (Map.Entry<String, String> block : blocks.entrySet()) {
      assertThat(regions).as("a region tagged '%s' in %s", block.getKey(), PROPERTY_SNIPPETS)
          .containsKey(block.getKey());
      assertThat(block.getValue()).as("README block '%s' (copy it from the tagged region)",
          block.getKey()).isEqualTo(regions.get(block.getKey()));
    }
  }

  @Test
  void aDriftedBlockIsFound() {
    Map<String, String> blocks = javaBlocks(
        "text\n<!-- snippet: manual-tx -->\n```java\nMono.usingWhen(pool.create(),\n```\n");
    assertThat(blocks.get("manual-tx")).isNotEqualTo(regions().get("manual-tx"));
  }

  @Test
  void aJavaBlockWithoutMarkerIsRefused() {
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> javaBlocks("a\n```java\nx();\n```\n"))
        .isInstanceOf(AssertionError.class)
        .hasMessageContaining("line 2");
  }

  /** Java blocks by snippet name; fails on a block without a marker. */
  static Map<String, String> javaBlocks(String markdown) {
    return blocks(markdown, "java");
  }

  /** Blocks of {@code language} by snippet name; fails on a block without a marker. */
  static Map<String, String> blocks(String markdown, String language) {
    Map<String, String> blocks = new LinkedHashMap<>();
    String[] lines = markdown.split("\n", -1);
    for (int i = 0; i < lines.length; i++) {
      if (!lines[i].strip().equals("```" + language)) {
        continue;
      }
      Matcher marker = i > 0 ? MARKER.matcher(lines[i - 1].strip()) : null;
      if (marker == null || !marker.matches()) {
        throw new AssertionError("README line " + (i + 1) + ": a " + language + " block needs "
            + "<!-- snippet: name --> on the line before, naming a tagged test region");
      }
      List<String> body = new ArrayList<>();
      int j = i + 1;
      while (j < lines.length && !lines[j].strip().equals("```")) {
        body.add(lines[j]);
        j++;
      }
      blocks.put(marker.group(1), String.join("\n", body));
      i = j;
    }
    return blocks;
  }

  /** Tagged regions of the snippet sources, dedented. */
  static Map<String, String> regions() {
    return regions(SNIPPETS, ".java", REGION);
  }

  private static Map<String, String> regions(Path dir, String suffix, Pattern region) {
    Map<String, String> regions = new LinkedHashMap<>();
    try (Stream<Path> files = Files.list(dir)) {
      for (Path file : files.filter(f -> f.toString().endsWith(suffix)).toList()) {
        Matcher m = region.matcher(Files.readString(file, StandardCharsets.UTF_8));
        while (m.find()) {
          regions.put(m.group(1), dedent(m.group(2)));
        }
      }
    } catch (IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
    return regions;
  }

  private static String dedent(String text) {
    List<String> lines = text.lines().toList();
    int indent = lines.stream().filter(l -> !l.isBlank())
        .mapToInt(l -> l.length() - l.stripLeading().length()).min().orElse(0);
    return String.join("\n", lines.stream()
        .map(l -> l.isBlank() ? "" : l.substring(indent)).toList());
  }
}
