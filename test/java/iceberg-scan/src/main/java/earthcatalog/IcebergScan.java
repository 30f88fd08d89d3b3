package earthcatalog;

import java.util.ArrayList;
import java.util.List;
import org.apache.iceberg.BaseTable;
import org.apache.iceberg.FileScanTask;
import org.apache.iceberg.Files;
import org.apache.iceberg.StaticTableOperations;
import org.apache.iceberg.StructLike;
import org.apache.iceberg.Table;
import org.apache.iceberg.expressions.Expressions;
import org.apache.iceberg.io.CloseableIterable;
import org.apache.iceberg.io.FileIO;
import org.apache.iceberg.io.InputFile;
import org.apache.iceberg.io.OutputFile;

/**
 * Plans a scan of the table whose metadata file is args[0] the way Java engines do, and prints the
 * planned files as JSON: {"files":[{"path","records","partition":[..]}],"pruned":N}. With args[1] a
 * grid cell, "pruned" counts the files planned for grid_partition = that cell. Exit 2 and the
 * exception on stderr when planning fails.
 */
public final class IcebergScan {
  /** Local files only: bare paths and file: URIs, as the project's local catalog writes them. */
  static final class LocalFileIO implements FileIO {
    private static String local(String location) {
      if (location.startsWith("file://")) return location.substring("file://".length());
      if (location.startsWith("file:")) return location.substring("file:".length());
      return location;
    }

    @Override
    public InputFile newInputFile(String location) {
      return Files.localInput(local(location));
    }

    @Override
    public OutputFile newOutputFile(String location) {
      return Files.localOutput(local(location));
    }

    @Override
    public void deleteFile(String location) {
      throw new UnsupportedOperationException("read-only: " + location);
    }
  }

  public static void main(String[] args) throws Exception {
    Table table = new BaseTable(new StaticTableOperations(args[0], new LocalFileIO()), "earthcatalog.stac_items");
    try {
      List<String> files = new ArrayList<>();
      try (CloseableIterable<FileScanTask> tasks = table.newScan().planFiles()) {
        for (FileScanTask task : tasks) {
          files.add("{\"path\":" + json(task.file().location()) + ",\"records\":" + task.file().recordCount()
              + ",\"partition\":" + partition(task.file().partition()) + "}");
        }
      }
      int pruned = -1;
      if (args.length > 1) {
        pruned = 0;
        try (CloseableIterable<FileScanTask> tasks = table.newScan().filter(Expressions.equal("grid_partition", args[1])).planFiles()) {
          for (FileScanTask ignored : tasks) pruned++;
        }
      }
      System.out.println("{\"files\":[" + String.join(",", files) + "],\"pruned\":" + pruned + "}");
    } catch (RuntimeException e) {
      System.err.println(e);
      System.exit(2);
    }
  }

  private static String partition(StructLike p) {
    List<String> values = new ArrayList<>();
    for (int i = 0; i < p.size(); i++) {
      Object v = p.get(i, Object.class);
      values.add(v == null ? "null" : v instanceof Number ? v.toString() : json(v.toString()));
    }
    return "[" + String.join(",", values) + "]";
  }

  private static String json(String s) {
    StringBuilder out = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') out.append('\\').append(c);
      else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
      else out.append(c);
    }
    return out.append('"').toString();
  }
}
