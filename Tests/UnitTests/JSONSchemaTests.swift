import JSON
import Testing

@Suite("JSON Schema validator")
struct JSONSchemaTests {
    let schema = try! JSONSchema(parsing: """
        {"type": "object", "required": ["id", "tags"], "additionalProperties": false,
         "properties": {
           "id": {"type": "integer", "minimum": 1},
           "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
           "ratio": {"type": "number", "exclusiveMaximum": 1},
           "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "uniqueItems": true, "maxItems": 2},
           "ref": {"$ref": "#/$defs/pos"}
         },
         "$defs": {"pos": {"type": "number", "minimum": 0}}}
        """)

    func failures(_ json: String) throws -> [String] {
        schema.validate(try JSONValue(parsing: json)).map(\.description)
    }

    @Test func acceptsValid() throws {
        #expect(try failures(#"{"id": 3, "name": "abc", "ratio": 0.5, "tags": ["a", "b"], "ref": 2}"#).isEmpty)
        #expect(try failures(#"{"id": 3.0, "tags": []}"#).isEmpty, "3.0 is an integer in JSON Schema")
    }

    @Test func explainsEachFailure() throws {
        #expect(try failures(#"{"tags": []}"#) == [#"missing required member "id""#])
        #expect(try failures(#"{"id": 0, "tags": []}"#) == ["/id: must be ≥ 1"])
        #expect(try failures(#"{"id": "1", "tags": []}"#) == ["/id: must be integer, not string"])
        #expect(try failures(#"{"id": 1, "tags": [], "name": ""}"#).contains("/name: must not be empty"))
        #expect(try failures(#"{"id": 1, "tags": [], "name": "abcdef"}"#).contains("/name: must be at most 5 characters long (it has 6)"))
        #expect(try failures(#"{"id": 1, "tags": [], "name": "AB"}"#) == ["/name: must match the pattern ^[a-z]+$"])
        #expect(try failures(#"{"id": 1, "tags": [], "ratio": 1}"#) == ["/ratio: must be < 1"])
        #expect(try failures(#"{"id": 1, "tags": ["c"]}"#) == [#"/tags/0: must be one of "a", "b""#])
        #expect(try failures(#"{"id": 1, "tags": ["a", "a"]}"#) == ["/tags: items must be unique"])
        #expect(try failures(#"{"id": 1, "tags": [], "extra": 1}"#) == [#"/extra: unknown member "extra""#])
        #expect(try failures(#"{"id": 1, "tags": [], "ref": -1}"#) == ["/ref: must be ≥ 0"])
        #expect(try failures("[]") == ["must be object, not array"])
    }

    @Test func oneOfReportsTheTaggedAlternative() throws {
        let s = try JSONSchema(parsing: """
            {"oneOf": [
              {"type": "object", "required": ["type", "answer"], "properties": {"type": {"const": "exact"}, "answer": {"type": "string"}}},
              {"type": "object", "required": ["type", "answer"], "properties": {"type": {"const": "numeric"}, "answer": {"type": "number"}}}
            ]}
            """)
        #expect(s.validate(try JSONValue(parsing: #"{"type": "numeric", "answer": 3}"#)).isEmpty)
        #expect(s.validate(try JSONValue(parsing: #"{"type": "numeric", "answer": "3"}"#)).map(\.description)
                == ["/answer: must be number, not string"])
    }

    @Test func refusesUnsupportedKeywords() {
        #expect(throws: JSONError.self) { try JSONSchema(parsing: #"{"type": "object", "patternProperties": {}}"#) }
        #expect(throws: JSONError.self) { try JSONSchema(parsing: #"{"type": "string", "pattern": "("}"#) }
        #expect(throws: JSONError.self) { try JSONSchema(parsing: #"{"$ref": "http://example.com/x"}"#) }
    }

    @Test func jsonValueRoundTrip() throws {
        let text = #"{"a":[1,2.5,"x",true,null],"b":{"c":-3}}"#
        let v = try JSONValue(parsing: text)
        #expect(v.jsonText == text)
        #expect(v["a"] == .array([.int(1), .double(2.5), .string("x"), .bool(true), .null]))
        #expect(throws: JSONError.self) { try JSONValue(parsing: "{nope") }
    }
}
