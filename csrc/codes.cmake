# camfast_generate_codes(<json> <header>): write the C++ side of camfast's code table.
#
# <json> is camfast/ops/codes.json, the one definition of the integer codes the kernels take
# (see its "about"); Python reads the same file at import. The header holds, per enum,
#   enum class <Name> : int { <Enumerator> = <code>, ... };
#   template <> struct CodeTable<<Name>> { kName, kArg, kSize, kNames[] };
# per constant `constexpr <type> <cpp> = <value>;`, and for_each_code_table /
# for_each_code_constant, which camfast._C.codes() uses to export what it was built with.
# The header is rewritten only when its text changes (no needless rebuilds), and CMake
# re-runs when the table changes. This file lives in csrc/, so it is part of the source
# fingerprint like the table itself.

function(_camfast_check_name what value regex)
  if(NOT value MATCHES "${regex}")
    message(FATAL_ERROR "camfast/ops/codes.json: ${what} '${value}' must match ${regex}")
  endif()
endfunction()

function(_camfast_comment out text)
  string(REGEX REPLACE "[\r\n]+" " " text "${text}")
  set(${out} "${text}" PARENT_SCOPE)
endfunction()

# <out> = the indices 0;1;... of the JSON array at <path...> in <json> (empty for an empty one).
function(_camfast_indices out json)
  string(JSON _n LENGTH "${json}" ${ARGN})
  set(_indices "")
  if(_n GREATER 0)
    math(EXPR _last "${_n} - 1")
    foreach(_i RANGE ${_last})
      list(APPEND _indices ${_i})
    endforeach()
  endif()
  set(${out} "${_indices}" PARENT_SCOPE)
endfunction()

# _<field> = each <field> of entry <index> of the JSON array <section> in the variable
# <json_var> (a macro, so it sets them in the caller; it takes the variable's name, as a
# macro would re-read backslashes in the text itself).
macro(_camfast_get_fields json_var section index)
  foreach(_field ${ARGN})
    string(JSON _${_field} GET "${${json_var}}" ${section} ${index} ${_field})
  endforeach()
endmacro()

function(camfast_generate_codes json header)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${json}")
  file(READ "${json}" _j)
  set(_ident "^[A-Za-z_][A-Za-z0-9_]*$")
  set(_h "// Generated from camfast/ops/codes.json by csrc/codes.cmake at configure time: do not edit.\n")
  string(APPEND _h "#pragma once\n\nnamespace camfast {\n\n")
  string(APPEND _h "// CodeTable<E>: the Python names of E's codes (kNames[code]), its size and the\n")
  string(APPEND _h "// argument it is passed as (kArg, for error messages).\n")
  string(APPEND _h "template <class E> struct CodeTable;\n\n")

  set(_tables "")
  _camfast_indices(_enums "${_j}" enums)
  foreach(i IN LISTS _enums)
    _camfast_get_fields(_j enums ${i} name arg doc)
    _camfast_check_name("enum name" "${_name}" "${_ident}")
    _camfast_check_name("arg of ${_name}" "${_arg}" "${_ident}")
    _camfast_comment(_doc "${_doc}")
    _camfast_indices(_values "${_j}" enums ${i} values)
    list(LENGTH _values _nv)
    if(_nv EQUAL 0)
      message(FATAL_ERROR "camfast/ops/codes.json: enum ${_name} has no values")
    endif()
    set(_enumerators "")
    set(_names "")
    foreach(k IN LISTS _values)
      string(JSON _py GET "${_j}" enums ${i} values ${k} 0)
      string(JSON _cpp GET "${_j}" enums ${i} values ${k} 1)
      _camfast_check_name("value of ${_name}" "${_py}" "^[a-z0-9_]+$")
      _camfast_check_name("enumerator of ${_name}" "${_cpp}" "${_ident}")
      list(APPEND _enumerators "${_cpp} = ${k}")
      list(APPEND _names "\"${_py}\"")
    endforeach()
    list(JOIN _enumerators ", " _enumerators)
    list(JOIN _names ", " _names)
    string(APPEND _h "// ${_name}: ${_doc}\n")
    string(APPEND _h "enum class ${_name} : int { ${_enumerators} };\n")
    string(APPEND _h "template <> struct CodeTable<${_name}> {\n")
    string(APPEND _h "  static constexpr const char* kName = \"${_name}\";\n")
    string(APPEND _h "  static constexpr const char* kArg = \"${_arg}\";\n")
    string(APPEND _h "  static constexpr int kSize = ${_nv};\n")
    string(APPEND _h "  static constexpr const char* kNames[kSize] = {${_names}};\n};\n\n")
    string(APPEND _tables "  f(CodeTable<${_name}>{});\n")
  endforeach()

  set(_consts "")
  _camfast_indices(_constants "${_j}" constants)
  foreach(i IN LISTS _constants)
    _camfast_get_fields(_j constants ${i} name cpp type value doc)
    _camfast_check_name("constant name" "${_name}" "${_ident}")
    _camfast_check_name("cpp of ${_name}" "${_cpp}" "${_ident}")
    if(NOT _type MATCHES "^(int|double)$")
      message(FATAL_ERROR "camfast/ops/codes.json: constant ${_name} has type '${_type}'; use int or double")
    endif()
    _camfast_comment(_doc "${_doc}")
    string(APPEND _h "// ${_name}: ${_doc}\n")
    string(APPEND _h "constexpr ${_type} ${_cpp} = ${_value};\n\n")
    string(APPEND _consts "  f(\"${_name}\", ${_cpp});\n")
  endforeach()

  string(APPEND _h "// f(CodeTable<E>{}) for every enum, in table order.\n")
  string(APPEND _h "template <class F> void for_each_code_table(F&& f) {\n  (void)f;\n${_tables}}\n\n")
  string(APPEND _h "// f(name, value) for every constant, in table order.\n")
  string(APPEND _h "template <class F> void for_each_code_constant(F&& f) {\n  (void)f;\n${_consts}}\n\n")
  string(APPEND _h "}  // namespace camfast\n")
  file(CONFIGURE OUTPUT "${header}" CONTENT "${_h}" @ONLY)
endfunction()
