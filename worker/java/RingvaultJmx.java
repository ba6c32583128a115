// The worker's JMX session helper: one JVM per worker, kept running, so that a snapshot or a
// clearsnapshot costs one JMX call instead of a nodetool JVM start (about 1.5 s of CPU each).
//
// Protocol (the worker's `jmx` module is the other end): one request per line on stdin, fields
// separated by tabs; one reply per request on stdout, `OK` or `ERR`, then tab-separated fields.
// No value carries a secret: the password is read here from the password file nodetool would be
// given (-pwf), and JMX over TLS is switched on by the same `-Dssl.enable=true` nodetool reads.
//
//   connect  HOST PORT USER PASSWORD_FILE   -> OK RELEASE_VERSION LOCAL_HOST_ID
//   snapshot TAG TTL ENTITIES               -> OK            (TTL like 60s or empty; ENTITIES
//                                                             ks or ks.table, comma-separated,
//                                                             empty for all keyspaces)
//   clearsnapshot TAG                       -> OK
//   version                                 -> OK RELEASE_VERSION
//
// Needs only the JDK (javax.management): no Cassandra class is loaded.
import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.HashMap;
import java.util.Map;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public final class RingvaultJmx {
    private static final String STORAGE_SERVICE = "org.apache.cassandra.db:type=StorageService";
    private static final String[] NO_STRINGS = new String[0];

    private String host;
    private int port;
    private String user;
    private String passwordFile;
    private JMXConnector connector;
    private MBeanServerConnection mbs;

    public static void main(String[] args) throws IOException {
        // Whatever a library prints goes to stderr; stdout carries only replies.
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "UTF-8");
        System.setOut(System.err);
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        RingvaultJmx session = new RingvaultJmx();
        String line;
        while ((line = in.readLine()) != null) {
            String reply;
            try {
                reply = "OK" + session.handle(line.split("\t", -1));
            } catch (Throwable t) {
                reply = "ERR\t" + describe(t);
            }
            out.println(reply);
        }
        session.close();
    }

    private String handle(String[] f) throws Exception {
        switch (f[0]) {
            case "connect":
                need(f, 5);
                host = f[1];
                port = Integer.parseInt(f[2]);
                user = f[3];
                passwordFile = f[4];
                connect();
                return "\t" + attribute("ReleaseVersion") + "\t" + attribute("LocalHostId");
            case "version":
                ensureConnected();
                return "\t" + attribute("ReleaseVersion");
            case "snapshot": {
                need(f, 4);
                ensureConnected();
                Map<String, String> options = new HashMap<>();
                options.put("skipFlush", "false");
                if (!f[2].isEmpty()) {
                    options.put("ttl", f[2]);
                }
                String[] entities = f[3].isEmpty() ? NO_STRINGS : f[3].split(",");
                mbs.invoke(new ObjectName(STORAGE_SERVICE), "takeSnapshot",
                        new Object[] {f[1], options, entities},
                        new String[] {"java.lang.String", "java.util.Map", "[Ljava.lang.String;"});
                return "";
            }
            case "clearsnapshot":
                need(f, 2);
                ensureConnected();
                mbs.invoke(new ObjectName(STORAGE_SERVICE), "clearSnapshot",
                        new Object[] {f[1], NO_STRINGS},
                        new String[] {"java.lang.String", "[Ljava.lang.String;"});
                return "";
            default:
                throw new IllegalArgumentException("unknown request " + f[0]);
        }
    }

    private static void need(String[] f, int n) {
        if (f.length != n) {
            throw new IllegalArgumentException(f[0] + " takes " + (n - 1) + " fields, got " + (f.length - 1));
        }
    }

    private String attribute(String name) throws Exception {
        return String.valueOf(mbs.getAttribute(new ObjectName(STORAGE_SERVICE), name));
    }

    /// A connection lost since the last request (the node restarted) is made again before the
    /// request is sent, so no request is ever sent twice.
    private void ensureConnected() throws Exception {
        if (mbs == null) {
            throw new IllegalStateException("not connected");
        }
        try {
            mbs.getMBeanCount();
        } catch (IOException lost) {
            close();
            connect();
        }
    }

    private void connect() throws Exception {
        Map<String, Object> env = new HashMap<>();
        if (!user.isEmpty()) {
            env.put(JMXConnector.CREDENTIALS, new String[] {user, password()});
        }
        // As nodetool: JMX over TLS when the JVM was started with -Dssl.enable=true.
        if (Boolean.parseBoolean(System.getProperty("ssl.enable"))) {
            env.put("com.sun.jndi.rmi.factory.socket", new javax.rmi.ssl.SslRMIClientSocketFactory());
        }
        String h = host.contains(":") ? "[" + host + "]" : host;
        JMXServiceURL url = new JMXServiceURL(
                String.format("service:jmx:rmi:///jndi/rmi://%s:%d/jmxrmi", h, port));
        connector = JMXConnectorFactory.connect(url, env);
        mbs = connector.getMBeanServerConnection();
    }

    /// The password for `user` in the password file (nodetool -pwf format: `USER PASSWORD`
    /// lines, `#` comments).
    private String password() throws IOException {
        if (passwordFile.isEmpty()) {
            throw new IllegalArgumentException("a JMX user needs a password file");
        }
        for (String l : Files.readAllLines(Paths.get(passwordFile), StandardCharsets.UTF_8)) {
            String t = l.trim();
            if (t.isEmpty() || t.startsWith("#")) {
                continue;
            }
            String[] p = t.split("\\s+", 2);
            if (p.length == 2 && p[0].equals(user)) {
                return p[1];
            }
        }
        throw new IllegalArgumentException("the JMX password file has no line for user " + user);
    }

    private void close() {
        mbs = null;
        if (connector != null) {
            try {
                connector.close();
            } catch (IOException ignored) {
                // The connection is gone either way.
            }
            connector = null;
        }
    }

    /// The exception chain on one line: class and message of each cause.
    private static String describe(Throwable t) {
        StringBuilder b = new StringBuilder();
        for (Throwable c = t; c != null && b.length() < 2000; c = c.getCause()) {
            if (b.length() > 0) {
                b.append(" <- ");
            }
            b.append(c.getClass().getName());
            if (c.getMessage() != null) {
                b.append(": ").append(c.getMessage());
            }
            if (c.getCause() == c) {
                break;
            }
        }
        return b.toString().replace('\t', ' ').replace('\n', ' ').replace('\r', ' ');
    }
}
