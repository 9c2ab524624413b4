"""People's names: what spaCy's English NER misses or gets wrong in helpdesk chat.

spaCy's small English model finds most full names, but run on Spanish it calls "Lo
necesito" or "la impresora de la" a person, and in IT chat it calls Jira and Grafana people.
So every PERSON span must look like a name (capitalized words, no product or department
words, a lone word only if it is a known first name), and a gazetteer of common first names
(English, Spanish and the largest immigrant communities in Spain) finds "Eva Gil" and
"Ioana Popescu", which the model misses.
"""

from __future__ import annotations

import regex
from presidio_analyzer import AnalysisExplanation, EntityRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

_FIRST_NAMES_TEXT = """
Aaron Abigail Adam Adrian Adrián Adriana Agnieszka Agustín Ahmed Aisha Aitor Alba Albert
Alberto Alejandra Alejandro Alex Alexander Alexis Alfonso Alfredo Ali Alice Alicia Almudena
Alvaro Álvaro Amanda Amelia Amit Amparo Amy Ana Ananya Anastasia Andrea Andrei Andrés Andrew
Ángela Angela Anna Anne Ann Antonia Antonio Anthony Archie Arjun Arthur Arturo Asier Astrid
Aurora Austin Ava Ashley Barbara Beatriz Begoña Belén Ben Benjamin Benito Betty Beverly
Blanca Bob Bobby Brandon Brenda Brian Brittany Bruce Bruno Bryan Callum Camille Carl Carla
Carlos Carmen Carol Carolina Caroline Carolyn Catalina Catherine Celia Charles Charlie
Charlotte Chen Cheryl Chiara Chloe Chris Christian Christina Christine Christopher Claire
Clara Claudia Connor Consuelo Cristian Cristina Cynthia Dan Daniel Daniela Danielle Dave
David Deborah Denise Dennis Diana Diane Diego Dmitri Domingo Donald Donna Dorothy Douglas
Dylan Eduardo Edward Elena Elijah Elisa Elizabeth Ella Ellie Emilia Emilio Emily Emma
Encarnación Enrique Eric Erik Esteban Ester Esther Estefanía Ethan Eugene Eva Evelyn Fátima
Fatima Fatma Félix Felipe Fernando Francesca Francesco Francisca Francisco Freddie Freya
Gabriel Gael Gary George Gema Gerald Gerardo Giovanni Giulia Giuseppe Gloria Gonzalo Gregory
Guillermo Hannah Hans Harold Harry Hassan Heather Héctor Helen Henry Hiroshi Hugo Ignacio
Iker Inés Ines Ingrid Inmaculada Ioana Irene Irina Isabel Isabella Isla Ismael Iván Ivan
Izan Jack Jacob Jacqueline Jaime James Jamie Janet Janice Jason Javier Jeffrey Jennifer
Jeremy Jerry Jesse Jessica Jesús Jim Jimena Joan Joana Joaquín João Joe John Jonathan Jordi
Jorge José Josefa Josep Joseph Joshua Joyce Juan Juana Judith Judy Julia Julián Julie Julio
Justin Karen Katarzyna Katherine Kathleen Kathryn Kayla Keith Kelly Kenji Kenneth Kevin
Kimberly Klaus Kyle Lars Laura Lauren Lawrence Leila Leo Lidia Liam Lily Linda Ling Lisa
Logan Lola Lorena Lorenzo Lori Lourdes Luca Lucas Lucía Lucy Luis Luisa Luke Manuel Manuela
Marc Marcelo Marco Marcos Margaret Margarita María Maria Mariano Marie Marilyn Marina Mario
Marta Martha Martín Martina Mary Mason Mateo Matt Matteo Matthew Megan Mei Melissa Mía Mia
Michael Michelle Miguel Mihai Mike Miriam Mohamed Mohammed Mónica Montserrat Muhammad Nancy
Natalia Natalie Nathan Nerea Nicholas Nick Nicolás Nicole Nina Noah Noelia Nuria Olga Oliver
Olivia Omar Óscar Oscar Owen Pablo Pamela Patricia Patrick Paul Paula Pedro Peter Philip
Pierre Piotr Priya Rachel Rafael Rahul Raj Ramón Randy Raquel Raúl Raymond Rebeca Rebecca
Rhys Ricardo Richard Robert Roberto Rocío Rodrigo Roger Ronald Rosario Roy Rubén Rui Russell
Ruth Ryan Sakura Sam Samantha Samuel Sandra Sara Sarah Scott Sean Sebastián Sergio Sharon
Shirley Silvia Sofía Sofia Sonia Sophia Sophie Stefan Stephanie Stephen Steve Steven Susan
Susana Sven Tamara Teresa Theo Theresa Thiago Thomas Tim Timothy Tom Tomás Tomasz Tyler Unai
Valeria Vanessa Verónica Victor Víctor Vikram Vicente Virginia Walter Wayne Wei William Xavier
Yasmin Yolanda Youssef Yuki Zachary Zainab
"""
# First names that are also everyday words, places or brands: alone they are not a name.
_AMBIGUOUS_TEXT = (
    "Mark Will Bill Grace Rosa Pilar Dolores Mercedes Luz Ángel Angel Victoria Summer Hope "
    "Faith Joy Amber Jean Frank Jan Max Holly Ivy Chase Hunter Salvador Santiago Paris April "
    "June May Sky Art Page Rose Lourdes Virginia Florence Austin Madison Charlotte Orlando "
    "Jordan Sydney Chelsea Dallas Houston Lincoln Jackson Israel Leo Alba Aurora Gloria "
    "Consuelo Amparo Jack Mía Mia Sol Paz"
)
AMBIGUOUS = frozenset(_AMBIGUOUS_TEXT.split())
FIRST_NAMES = frozenset(_FIRST_NAMES_TEXT.split()) | AMBIGUOUS
# The most common surnames in Spain (INE) and in English-speaking countries: after any
# capitalized word they make a name ("Aurelio Benítez", "Wilson Ramírez").
_SURNAMES_TEXT = """
García Fernández González Rodríguez López Martínez Sánchez Pérez Gómez Martín Jiménez Ruiz
Hernández Díaz Moreno Muñoz Álvarez Romero Alonso Gutiérrez Navarro Torres Domínguez Vázquez
Ramos Gil Ramírez Serrano Blanco Molina Morales Suárez Ortega Delgado Castro Ortiz Rubio
Marín Sanz Núñez Iglesias Medina Garrido Cortés Castillo Santos Lozano Guerrero Cano Prieto
Méndez Cruz Calvo Gallego Vidal León Márquez Herrera Peña Flores Cabrera Campos Vega Fuentes
Carrasco Díez Caballero Reyes Nieto Aguilar Pascual Santana Herrero Lorenzo Montero Hidalgo
Giménez Ibáñez Ferrer Durán Benítez Mora Vicente Vargas Arias Carmona Crespo Román Pastor
Soto Sáez Velasco Moya Soler Parra Esteban Bravo Gallardo Rojas Pardo Merino Franco Espinosa
Izquierdo Lara Rivas Silva Rivera Casado Arroyo Redondo Camacho Rey Vera Otero Luque Galán
Montes Ríos Sierra Segura Carrillo Marcos Marti Soriano Mendoza Robles Bernal Vila Quintero
Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore Martin
Jackson Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright Scott
Hill Green Adams Baker Nelson Carter Mitchell Roberts Turner Phillips Campbell Parker Evans
Edwards Collins Stewart Morris Murphy Cook Rogers Morgan Cooper Peterson Reed Bailey Bell
Kelly Howard Ward Cox Richardson Wood Watson Brooks Bennett Gray Hughes Price Sanders
Myers Long Ross Foster Powell Jenkins Perry Russell Sullivan Butler Barnes Fisher Henderson
Coleman Simmons Patterson Jordan Reynolds Hamilton Graham Wallace Cole West Stone Murray
Davies Jenkins Lloyd Owen Hughes Patel Khan Singh Shah Ali Ahmed Chen Wang Li Zhang Liu
Nguyen Kim Park Lee Kowalski Nowak Müller Schmidt Schneider Fischer Weber Meyer Wagner
Rossi Russo Ferrari Esposito Bianchi Romano Silva Santos Ferreira Pereira Oliveira Costa
"""
SURNAMES = frozenset(_SURNAMES_TEXT.split())
# "San Francisco", "Santa Clara", "Saint Louis": places named after people.
_PLACE_BEFORE = regex.compile(r"(?:\b(?:San|Santa|Santo|Saint|St|São|Sankt)\.?[ \t]+)$")
# Between two parts of a name: María de la Fuente, Ludwig van Beethoven, Mohamed El Amrani.
_PARTICLES_TEXT = "de del la las los y van von der den da das do dos di du le el al bin ibn ben"
PARTICLES = frozenset(_PARTICLES_TEXT.split())
_TITLES_TEXT = "mr mrs ms miss dr prof sr sra srta don doña dña sir madam señor señora señorita"
TITLES = frozenset(_TITLES_TEXT.split())
# Words that start or end what NER calls a person without being part of the name.
_LEAD_WORDS_TEXT = """
    hi hello hey dear thanks thank regards cheers best please ask call contact cc
    hola buenas buenos gracias saludos soy me llamo mi mis su sus tu tus el la lo los las un
    una y o a al con de del para por según
    i i'm im my your his her our their the a an this that is from to for with and or but
    manager boss colleague jefe jefa compañero compañera responsable
"""
_LEAD_WORDS = frozenset(_LEAD_WORDS_TEXT.split())
# Capitalized words that helpdesk chat is full of and that are never people.
_NOT_NAMES_TEXT = """
    windows linux ubuntu macos ios android outlook teams excel word powerpoint onedrive
    sharepoint office microsoft google gmail chrome firefox safari edge zoom slack jira
    confluence jenkins grafana kibana prometheus datadog splunk okta sap workday salesforce
    servicenow adobe acrobat reader photoshop figma docker kubernetes terraform ansible
    github gitlab bitbucket aws azure oracle postgres mysql redis python java vpn wifi wi-fi
    cisco dell lenovo hp apple macbook iphone ipad samsung ricoh canon epson xerox udemy
    coursera linkedin pro plus max server cloud desktop portal admin support helpdesk service
    desk recursos humanos human resources finance finanzas ventas sales compras purchasing
    marketing logística logistics contabilidad accounting legal nóminas payroll operaciones
    operations sistemas systems seguridad security team equipo department departamento
    monday tuesday wednesday thursday friday saturday sunday lunes martes miércoles jueves
    viernes sábado domingo january february march july august september october november
    december enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre
    diciembre madrid barcelona valencia sevilla bilbao lisboa london bogotá denver atlas
    internet intranet wiki error ticket incident request change release build version
    driver printer impresora laptop portátil usuario user cuenta account correo email
    thanks gracias hola saludos buenas
"""
NOT_NAMES = frozenset(_NOT_NAMES_TEXT.split())

# "Formación Digital S.L." is a company, whatever NER says.
_COMPANY = regex.compile(
    r"[ \t]*,?[ \t]*(?:S\.?[LA]\.?(?:U\.?)?|Inc|Ltd|LLC|GmbH|Corp|PLC|AG|SpA)"
    r"(?![\p{L}\d])"
)
_TOKEN = regex.compile(r"[\p{L}\p{M}'\u2019.-]+")
_NAME_WORD = regex.compile(r"(?:[OD]['\u2019])?(?:Mc|Mac)?\p{Lu}\p{Ll}+(?:-\p{Lu}\p{Ll}+)*")
_CAPITALIZED = regex.compile(r"(?<![\p{L}\p{M}\d_@.-])\p{Lu}\p{Ll}+(?![\p{L}\p{M}\d_@])")
_INTRODUCED = regex.compile(
    r"\b(?:hi|hello|hey|dear|thanks|thank you|cheers|regards|hola|gracias|saludos|soy|"
    r"me llamo|i'm|i am|my name is|mi nombre es)\W*$",
    regex.IGNORECASE,
)
_NEXT_WORD = regex.compile(r"[ \t]+([\p{L}\p{M}'\u2019-]+)")
_POSSESSIVE = regex.compile(r"['\u2019]s$")


def _is_name_word(word: str) -> bool:
    return bool(_NAME_WORD.fullmatch(word)) and word.lower() not in NOT_NAMES


def _words(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    for match in _TOKEN.finditer(text, start, end):
        s, e = match.span()
        word = text[s:e]
        possessive = _POSSESSIVE.search(word)
        if possessive:
            e -= len(possessive.group(0))
        while e > s and text[e - 1] in ".-'\u2019":
            e -= 1
        if e > s:
            spans.append((s, e))
    return spans


def _titled(text: str, start: int) -> bool:
    before = regex.search(r"([\p{L}]+)\.?\s*$", text[max(0, start - 12) : start])
    return before is not None and before.group(1).lower() in TITLES


def plausible_name(text: str, start: int, end: int) -> tuple[int, int] | None:
    """The part of an NER "person" span that looks like a name, or None."""
    words = _words(text, start, end)
    if any(_COMPANY.fullmatch(text[s:e]) for s, e in words) or _COMPANY.match(text, end):
        return None
    while words and (
        text[words[0][0] : words[0][1]].lower() in _LEAD_WORDS
        or not _NAME_WORD.fullmatch(text[words[0][0] : words[0][1]])
    ):
        words.pop(0)
    while words and not _NAME_WORD.fullmatch(text[words[-1][0] : words[-1][1]]):
        words.pop()
    if not words:
        return None
    parts = [text[s:e] for s, e in words]
    core = [p for p in parts if p.lower() not in PARTICLES]
    if not core or len(core) > 5 or any(not _is_name_word(p) for p in core):
        return None
    if any(p.lower() in _LEAD_WORDS for p in core):
        return None
    # A lone word: a title ("Dr. Okafor"), a known first name, or an ambiguous one ("Rosa",
    # "Mark") introduced as a person ("soy Rosa", "Thanks, Mark").
    if len(core) == 1 and not (
        _titled(text, words[0][0])
        or (core[0] in FIRST_NAMES and core[0] not in AMBIGUOUS)
        or (
            core[0] in AMBIGUOUS and _INTRODUCED.search(text, max(0, words[0][0] - 24), words[0][0])
        )
    ):
        return None
    return words[0][0], words[-1][1]


class KnownNameRecognizer(EntityRecognizer):
    """A known first name, with the capitalized surnames that follow it."""

    name: str

    FULL_NAME_SCORE = 0.85
    FIRST_NAME_SCORE = 0.6
    SURNAME_SCORE = 0.7
    # An ambiguous first name alone needs a context word ("soy Rosa", "thanks, Mark").
    AMBIGUOUS_SCORE = 0.3
    CONTEXT = ["soy", "llamo", "name", "hola", "hi", "hello", "thanks", "gracias", "dear"]

    def __init__(self) -> None:
        super().__init__(
            supported_entities=["PERSON"],
            name="KnownNameRecognizer",
            supported_language="en",
            context=list(self.CONTEXT),
        )

    def load(self) -> None:
        pass

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        covered = 0
        for match in _CAPITALIZED.finditer(text):
            first = match.group(0)
            if match.start() < covered or not _is_name_word(first):
                continue
            if first.lower() in _LEAD_WORDS or _PLACE_BEFORE.search(text, 0, match.start()):
                continue
            end, surnames = self._surnames(text, match.end())
            if first in FIRST_NAMES:
                if surnames:
                    score = self.FULL_NAME_SCORE
                elif first in AMBIGUOUS:
                    score = self.AMBIGUOUS_SCORE
                else:
                    score = self.FIRST_NAME_SCORE
            elif surnames and text[match.end() : end].split()[-1] in SURNAMES:
                score = self.SURNAME_SCORE  # an unknown first name before a known surname
            else:
                continue
            covered = end
            results.append(self._result(match.start(), end, score))
        return results

    @staticmethod
    def _surnames(text: str, end: int) -> tuple[int, int]:
        """Extend past up to three capitalized surnames (and particles between them)."""
        count = 0
        position = end
        while count < 3:
            match = _NEXT_WORD.match(text, position)
            if not match:
                break
            word = match.group(1)
            if _is_name_word(word) and word.lower() not in _LEAD_WORDS:
                position = end = match.end()
                count += 1
            elif word.lower() in PARTICLES:
                position = match.end()  # kept only if a surname follows
            else:
                break
        return end, count

    def _result(self, start: int, end: int, score: float) -> RecognizerResult:
        return RecognizerResult(
            entity_type="PERSON",
            start=start,
            end=end,
            score=score,
            analysis_explanation=AnalysisExplanation(
                recognizer=self.name,
                original_score=score,
                textual_explanation="a known first name",
            ),
            recognition_metadata={
                RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
            },
        )


def person_recognizer() -> KnownNameRecognizer:
    return KnownNameRecognizer()
