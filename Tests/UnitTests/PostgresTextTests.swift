import Foundation
@testable import Postgres
import Testing

@Suite("Postgres text formats and SQL scripts")
struct PostgresTextTests {
    @Test func arrayLiterals() {
        #expect(PostgresArray.parse("{}") == [])
        #expect(PostgresArray.parse(#"{a,"b c","d\"e",NULL,"NULL"}"#) == ["a", "b c", "d\"e", nil, "NULL"])
        #expect(PostgresArray.parse("[0:1]={1,2}") == ["1", "2"])
        #expect(PostgresArray.parse("{{1},{2}}") == nil)
        #expect(["x,y", "q\"", "back\\slash"].postgresValue == .text(#"{"x,y","q\"","back\\slash"}"#))
        let parsed = [String](postgresText: #"{"x,y","q\"","back\\slash"}"#)
        #expect(parsed == ["x,y", "q\"", "back\\slash"])
    }

    @Test func timestamps() throws {
        let d = try #require(Date(postgresText: "2026-11-22 16:20:05.123456+00"))
        #expect(abs(d.timeIntervalSince1970 - 1_795_364_405.123456) < 1e-6)
        let offset = try #require(Date(postgresText: "2026-11-22 18:20:05+02"))
        #expect(offset.timeIntervalSince1970 == 1_795_364_405)
        #expect(Date(postgresText: "yesterday") == nil)
        #expect(Date(timeIntervalSince1970: 0.5).postgresValue == .text("1970-01-01 00:00:00.500000+00"))
    }

    @Test func byteaHex() {
        #expect(Bytea(postgresText: "\\x00ff10")?.bytes == [0, 255, 16])
        #expect(Bytea(postgresText: "\\x0") == nil)
        #expect(Bytea(postgresText: "plain") == nil)
    }

    @Test func scriptSplitting() {
        let script = SQLScript("""
            -- header; with a semicolon
            CREATE TABLE a (x text DEFAULT 'it''s; fine');
            /* block; /* nested; */ still comment */
            CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;
            CREATE FUNCTION g() RETURNS text LANGUAGE plpgsql AS $body$ BEGIN RETURN 'x;y'; END $body$;
            SELECT E'back\\'slash;', "odd;ident" FROM t WHERE y = $1;
            -- trailing comment only
            """)
        #expect(script.statements.count == 4)
        #expect(script.statements.map(\.line) == [2, 4, 5, 6])
        #expect(script.statements[0].sql == "CREATE TABLE a (x text DEFAULT 'it''s; fine')")
        #expect(script.statements[1].sql.hasSuffix("$$ SELECT 1; $$"))
        #expect(script.statements[3].sql.hasSuffix("WHERE y = $1"))
    }

    @Test func redaction() {
        #expect(ConnectionString.redacted("postgresql://u:pw@host:5432/db") == "postgresql://u:***@host:5432/db")
        #expect(ConnectionString.redacted("postgresql://u@host/db") == "postgresql://u@host/db")
        #expect(ConnectionString.redacted("dbname=x password=pw") == "dbname=x password=***")
    }
}
