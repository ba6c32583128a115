// sstableloader's credentials without its command line: `sstableloader -ap
// ringvault.FileAuthProvider` instantiates this class (no-argument constructor) and it reads the
// CQL user from RINGVAULT_LOADER_USERNAME and the password from the first line of the file named
// by RINGVAULT_LOADER_PASSWORD_FILE (or from RINGVAULT_LOADER_PASSWORD). The ringvault worker
// sets these in sstableloader's environment; `sstableloader -u USER -pw PASSWORD` would show the
// password to every local user in `ps`.
//
// Build (once per Cassandra version), and put the directory on sstableloader's classpath:
//   javac -cp "$CASSANDRA_HOME/lib/*" -d /opt/ringvault/java worker/java/ringvault/FileAuthProvider.java
package ringvault;

import com.datastax.driver.core.PlainTextAuthProvider;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;

/** The driver's plain-text authentication, with the credentials read from the environment. */
public final class FileAuthProvider extends PlainTextAuthProvider
{
    public FileAuthProvider()
    {
        super(user(), password());
    }

    private static String user()
    {
        String user = System.getenv("RINGVAULT_LOADER_USERNAME");
        if (user == null || user.isEmpty())
            throw new IllegalStateException("RINGVAULT_LOADER_USERNAME is not set");
        return user;
    }

    private static String password()
    {
        String password = System.getenv("RINGVAULT_LOADER_PASSWORD");
        String file = System.getenv("RINGVAULT_LOADER_PASSWORD_FILE");
        if (file != null && !file.isEmpty())
        {
            try
            {
                List<String> lines = Files.readAllLines(Paths.get(file), StandardCharsets.UTF_8);
                password = lines.isEmpty() ? "" : lines.get(0);
            }
            catch (IOException e)
            {
                // The exception's class only: its message could quote the file.
                throw new IllegalStateException("reading the password file " + file + ": " + e.getClass().getSimpleName());
            }
        }
        if (password == null || password.isEmpty())
            throw new IllegalStateException("no password: set RINGVAULT_LOADER_PASSWORD_FILE or RINGVAULT_LOADER_PASSWORD");
        return password;
    }
}
