"""``parrot demo``: pictures of simple coloured shapes, each asked about in the six MMMB languages (an open
question and an MMMB-style multiple-choice question), with the answer, the MoE's routing weights per question
and the time taken. With ``paraphrases=True`` (``parrot demo --paraphrases``) each picture is also asked a
question worded as a person might type it, in a wording the shipped model was not trained on.

It uses the default model: the tiny Parrot that ships in the package (``parrot/models``, trained by
``training/train.py`` on exactly this world of shapes, colours and counts), or ``$PARROT_MODEL``. Without any
model it builds a small *random* Parrot on the spot (numpy only) so the pipeline still runs, and says that its
answers are noise.

The vocabulary below (colours, shapes, counts, their words and the questions in six languages) is the shipped
model's world; ``training/data.py`` imports it from here, so the demo asks exactly what the model was taught.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from typing import IO, Any, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["LANGS", "SHAPES", "COLOURS", "COUNTS", "KINDS", "OPEN_KINDS", "COLOUR_HSV", "COLOUR_RGB", "WORDS",
           "QUESTIONS", "PHRASINGS", "HELDOUT_PHRASINGS", "describe", "DemoScene",
           "SCENES", "draw_scene", "mc_prompt", "make_random_model", "write_random_checkpoint",
           "default_or_random_model", "run"]

#: The six MMMB languages (MMMB's file suffix for Chinese is ``_cn``).
LANGS = ["en", "zh", "pt", "ar", "tr", "ru"]
SHAPES = ["circle", "square", "triangle", "star"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
COUNTS = [1, 2, 3, 4]
#: What a question asks about.
KINDS = ["colour", "shape", "count"]

#: What each colour name covers, in HSV: (hue from, hue to in degrees, lowest saturation, lowest value). The
#: training pictures draw their colours anywhere in these ranges; below the value floor, orange turns brown and
#: yellow olive.
COLOUR_HSV = {"red": (-12, 8, 0.75, 0.65), "orange": (18, 36, 0.7, 0.8), "yellow": (46, 60, 0.7, 0.8),
              "green": (90, 150, 0.5, 0.45), "blue": (200, 245, 0.5, 0.5), "purple": (262, 292, 0.6, 0.45)}
COLOUR_RGB = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 220, 30),
              "purple": (140, 40, 180), "orange": (250, 140, 20)}

#: The answer words, per language.
WORDS: Dict[str, Dict[object, str]] = {
    "en": {"red": "red", "green": "green", "blue": "blue", "yellow": "yellow", "purple": "purple", "orange": "orange",
           "circle": "circle", "square": "square", "triangle": "triangle", "star": "star",
           1: "one", 2: "two", 3: "three", 4: "four"},
    "zh": {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色", "orange": "橙色",
           "circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形",
           1: "一", 2: "二", 3: "三", 4: "四"},
    "pt": {"red": "vermelho", "green": "verde", "blue": "azul", "yellow": "amarelo", "purple": "roxo",
           "orange": "laranja", "circle": "círculo", "square": "quadrado", "triangle": "triângulo", "star": "estrela",
           1: "um", 2: "dois", 3: "três", 4: "quatro"},
    "ar": {"red": "أحمر", "green": "أخضر", "blue": "أزرق", "yellow": "أصفر", "purple": "بنفسجي", "orange": "برتقالي",
           "circle": "دائرة", "square": "مربع", "triangle": "مثلث", "star": "نجمة",
           1: "واحد", 2: "اثنان", 3: "ثلاثة", 4: "أربعة"},
    "tr": {"red": "kırmızı", "green": "yeşil", "blue": "mavi", "yellow": "sarı", "purple": "mor", "orange": "turuncu",
           "circle": "daire", "square": "kare", "triangle": "üçgen", "star": "yıldız",
           1: "bir", 2: "iki", 3: "üç", 4: "dört"},
    "ru": {"red": "красный", "green": "зелёный", "blue": "синий", "yellow": "жёлтый", "purple": "фиолетовый",
           "orange": "оранжевый", "circle": "круг", "square": "квадрат", "triangle": "треугольник", "star": "звезда",
           1: "один", 2: "два", 3: "три", 4: "четыре"},
}

#: The questions, per language and kind.
QUESTIONS: Dict[str, Dict[str, str]] = {
    "en": {"colour": "What color are the shapes in the image?", "shape": "What shape are the objects in the image?",
           "count": "How many shapes are in the image?"},
    "zh": {"colour": "图中的图形是什么颜色？", "shape": "图中的物体是什么形状？", "count": "图中有几个图形？"},
    "pt": {"colour": "De que cor são as formas na imagem?", "shape": "Qual é a forma dos objetos na imagem?",
           "count": "Quantas formas há na imagem?"},
    "ar": {"colour": "ما لون الأشكال في الصورة؟", "shape": "ما شكل الأجسام في الصورة؟", "count": "كم عدد الأشكال في الصورة؟"},
    "tr": {"colour": "Resimdeki şekiller ne renk?", "shape": "Resimdeki nesneler hangi şekilde?",
           "count": "Resimde kaç şekil var?"},
    "ru": {"colour": "Какого цвета фигуры на изображении?", "shape": "Какой формы объекты на изображении?",
           "count": "Сколько фигур на изображении?"},
}

#: What a person may type, per language and kind: the "describe" kind asks for the whole picture and is answered
#: by :func:`describe` ("two red circles"). ``PHRASINGS`` are what the shipped model is trained on (each kind's
#: first is its ``QUESTIONS`` wording); ``HELDOUT_PHRASINGS`` are never trained on: the held-out tests and the
#: demo's paraphrased questions use them, so they show whether the model follows a question it has not seen.
OPEN_KINDS = KINDS + ["describe"]

PHRASINGS: Dict[str, Dict[str, List[str]]] = {
    "en": {
        "colour": [QUESTIONS["en"]["colour"], "What colour are the shapes?", "which color",
                   "Can you tell me the colour of the shapes?", "What color do you see", "colour?",
                   "Tell me what colour these are.", "What is the color of the objects?",
                   "Could you please tell me which colour the shapes have?", "what colour are they",
                   "Name the colour of the figures.", "What's the colour here?",
                   "Which colour are the objects in this picture?", "color of the shapes",
                   "Please say what color the things in the picture are."],
        "shape": [QUESTIONS["en"]["shape"], "Which shape do you see?", "shape?", "What kind of shape is this",
                  "Can you tell me what shape these are?", "What are the figures shaped like?", "Name the shape.",
                  "what shape are they", "Which geometric shape is shown in the picture?",
                  "Please tell me the shape of the objects.", "What's the shape here?",
                  "What form do the objects have?", "Identify the shape in this image.", "shape of the objects",
                  "Could you say which shape is drawn?"],
        "count": [QUESTIONS["en"]["count"], "How many are there?", "count them", "How many objects do you see?",
                  "Can you count the shapes?", "number of shapes?", "How many figures are in the picture",
                  "Please tell me how many shapes there are.", "how many",
                  "What is the number of objects in this image?", "Count the objects, please.",
                  "How many things are drawn here?", "Could you tell me how many shapes are shown?",
                  "How many items can you see in the picture?", "How many of them are there"],
        "describe": ["Describe the image.", "What is in the picture?", "describe", "What do you see?",
                     "Can you describe this picture?", "What's in this image", "Tell me what the image shows.",
                     "Please describe what you see.", "What does the picture show?",
                     "Give a short description of the image.", "what is this", "Describe the picture briefly, please.",
                     "What is shown here?", "Can you tell me what's in the picture?", "Describe what is drawn."],
    },
    "zh": {
        "colour": [QUESTIONS["zh"]["colour"], "这是什么颜色？", "什么颜色", "请问图形是什么颜色的？", "它们是什么颜色",
                   "这些形状是什么颜色？", "颜色是什么？", "图片里的物体是什么颜色的", "你能告诉我这些图形的颜色吗？",
                   "请说出图形的颜色。", "图上的东西是什么颜色？", "它们是哪种颜色？", "颜色？", "画的是什么颜色",
                   "这张图里的图形是什么颜色的？"],
        "shape": [QUESTIONS["zh"]["shape"], "这是什么形状？", "什么形状", "请问图形是什么形状的？", "它们是什么形状",
                  "这些东西是什么形状？", "形状是什么？", "图片里的物体是什么形状的", "你能告诉我这些图形的形状吗？",
                  "请说出图形的形状。", "图上画的是什么形状？", "它们是哪种形状？", "形状？", "这是哪种几何图形",
                  "这张图里的物体是什么形状的？"],
        "count": [QUESTIONS["zh"]["count"], "有几个？", "一共有多少个", "请问图里有几个物体？", "数一数有几个图形",
                  "图片中有多少个形状？", "几个？", "这里有几个东西", "你能数一下图形的数量吗？", "请告诉我有几个图形。",
                  "图上画了几个？", "物体的数量是多少？", "有多少个图形", "图中一共有几个物体？", "这张图里有几个形状？"],
        "describe": ["描述一下这张图片。", "图里有什么？", "描述", "你看到了什么？", "请描述这张图。", "图片上是什么",
                     "这张图片画了什么？", "请简单描述一下图片。", "图中显示的是什么？", "说说图里有什么", "这是什么？",
                     "能描述一下这幅图吗？", "图片内容是什么？", "简要描述图像", "画的是什么？"],
    },
    "pt": {
        "colour": [QUESTIONS["pt"]["colour"], "Qual é a cor das formas?", "que cor", "De que cor são?",
                   "Qual a cor dos objetos?", "Pode me dizer a cor das figuras?", "cor?",
                   "Diga a cor das formas, por favor.", "Que cor você vê na imagem", "De que cor é isso?",
                   "Qual é a cor dos objetos na figura?", "Por favor, qual é a cor?",
                   "Em que cor estão desenhadas as formas?", "cor das formas",
                   "Você sabe dizer de que cor são as figuras?"],
        "shape": [QUESTIONS["pt"]["shape"], "Que forma é essa?", "qual forma", "Qual é o formato das figuras?",
                  "Que forma eles têm?", "Pode me dizer a forma dos objetos?", "forma?", "Diga a forma, por favor.",
                  "Que figura geométrica aparece na imagem", "Qual a forma das figuras?", "Que formato você vê?",
                  "Por favor, qual é a forma?", "Qual forma está desenhada?", "formato dos objetos",
                  "Você sabe dizer que forma é essa?"],
        "count": [QUESTIONS["pt"]["count"], "Quantos são?", "quantos", "Quantos objetos você vê?",
                  "Pode contar as formas?", "Quantas figuras tem na imagem", "número de formas?",
                  "Conte os objetos, por favor.", "Quantas formas existem aqui?",
                  "Qual é o número de objetos na figura?", "Por favor, quantas formas há?",
                  "Quantos objetos estão desenhados?", "Me diga quantas figuras há.", "quantidade de formas",
                  "Você consegue contar quantas formas tem?"],
        "describe": ["Descreva a imagem.", "O que tem na imagem?", "descreva", "O que você vê?",
                     "Pode descrever esta imagem?", "O que há na figura", "Diga o que a imagem mostra.",
                     "Por favor, descreva o que você vê.", "O que a imagem mostra?",
                     "Faça uma breve descrição da imagem.", "o que é isso", "Descreva a figura, por favor.",
                     "O que está desenhado aqui?", "Me conta o que tem na imagem?", "Descreva rapidamente a cena."],
    },
    "ar": {
        "colour": [QUESTIONS["ar"]["colour"], "ما لونها؟", "ما اللون", "ما لون الأجسام؟",
                   "هل يمكنك أن تخبرني بلون الأشكال؟", "أي لون هذا؟", "اللون؟", "من فضلك، ما لون الأشكال؟",
                   "بأي لون رسمت الأشكال", "ما هو لون الأشياء في الصورة؟", "اذكر لون الأشكال.",
                   "ما اللون الذي تراه؟", "لون الأشكال", "ما لون هذه الأشكال", "أخبرني ما لون الأجسام في الصورة."],
        "shape": [QUESTIONS["ar"]["shape"], "ما شكلها؟", "ما الشكل", "ما هو شكل الأجسام؟",
                  "هل يمكنك أن تخبرني بشكل الأجسام؟", "أي شكل هذا؟", "الشكل؟", "من فضلك، ما الشكل المرسوم؟",
                  "ما الشكل الهندسي في الصورة", "ما هو شكل الأشياء في الصورة؟", "اذكر الشكل.",
                  "ما الشكل الذي تراه؟", "شكل الأجسام", "ما شكل هذه الأشياء", "أخبرني ما شكل الأجسام في الصورة."],
        "count": [QUESTIONS["ar"]["count"], "كم عددها؟", "كم", "كم شكلاً تراه؟", "هل يمكنك عد الأشكال؟",
                  "ما عدد الأجسام؟", "العدد؟", "من فضلك، كم شكلاً في الصورة؟", "عد الأشكال", "كم جسماً في الصورة؟",
                  "اذكر عدد الأشكال.", "كم شيئاً مرسوماً هنا؟", "عدد الأشكال", "كم عدد الأشياء في الصورة",
                  "أخبرني كم عدد الأجسام."],
        "describe": ["صف الصورة.", "ماذا في الصورة؟", "صف", "ماذا ترى؟", "هل يمكنك وصف هذه الصورة؟",
                     "ما الذي في الصورة", "أخبرني ماذا تظهر الصورة.", "من فضلك صف ما تراه.", "ماذا تعرض الصورة؟",
                     "أعط وصفاً قصيراً للصورة.", "ما هذا", "صف الصورة باختصار من فضلك.", "ما المرسوم هنا؟",
                     "قل لي ما في الصورة", "صف ما هو مرسوم."],
    },
    "tr": {
        "colour": [QUESTIONS["tr"]["colour"], "Ne renk?", "hangi renk", "Şekillerin rengi ne?",
                   "Nesneler hangi renkte?", "Şekillerin rengini söyler misin?", "renk?",
                   "Lütfen şekillerin rengini söyle.", "Bunlar ne renk", "Resimdeki nesnelerin rengi nedir?",
                   "Şekiller hangi renkte çizilmiş?", "Gördüğün renk ne?", "şekillerin rengi", "Bu şekillerin rengi ne",
                   "Resimdeki cisimler ne renktir?"],
        "shape": [QUESTIONS["tr"]["shape"], "Şekil ne?", "hangi şekil", "Nesnelerin şekli ne?",
                  "Bunlar hangi şekil?", "Nesnelerin şeklini söyler misin?", "şekil?", "Lütfen şekli söyle.",
                  "Bunlar ne şekil", "Resimdeki nesnelerin şekli nedir?", "Hangi geometrik şekil çizilmiş?",
                  "Gördüğün şekil ne?", "nesnelerin şekli", "Bu nesneler ne şeklinde",
                  "Resimdeki cisimlerin şekli nedir?"],
        "count": [QUESTIONS["tr"]["count"], "Kaç tane var?", "kaç", "Kaç nesne görüyorsun?",
                  "Şekilleri sayabilir misin?", "Resimde kaç tane nesne var", "şekil sayısı?", "Lütfen nesneleri say.",
                  "Burada kaç şekil var?", "Resimdeki nesnelerin sayısı nedir?", "Kaç tane şekil çizilmiş?",
                  "Kaç tane?", "nesne sayısı", "Kaç şekil görüyorsun", "Bana kaç şekil olduğunu söyle."],
        "describe": ["Resmi anlat.", "Resimde ne var?", "anlat", "Ne görüyorsun?", "Bu resmi tarif edebilir misin?",
                     "Resimde neler var", "Resmin ne gösterdiğini söyle.", "Lütfen gördüğünü anlat.",
                     "Resim neyi gösteriyor?", "Resmi kısaca tarif et.", "bu ne", "Resmi kısaca anlat lütfen.",
                     "Burada ne çizilmiş?", "Resimde ne olduğunu söyler misin?", "Çizileni tarif et."],
    },
    "ru": {
        "colour": [QUESTIONS["ru"]["colour"], "Какого они цвета?", "какой цвет", "Какого цвета объекты?",
                   "Скажи, пожалуйста, какого цвета фигуры.", "Цвет?", "Какого цвета эти фигуры",
                   "Назовите цвет фигур.", "Каким цветом нарисованы фигуры?", "Какой цвет у предметов на картинке?",
                   "Можете сказать, какого цвета фигуры?", "цвет фигур", "Какой цвет ты видишь?",
                   "Какого цвета предметы на рисунке", "Подскажите цвет, пожалуйста."],
        "shape": [QUESTIONS["ru"]["shape"], "Какой они формы?", "какая форма", "Какой формы фигуры?",
                  "Скажи, пожалуйста, какой формы предметы.", "Форма?", "Какой формы эти предметы",
                  "Назовите форму фигур.", "Какая фигура нарисована?", "Какая форма у предметов на картинке?",
                  "Можете сказать, какой формы объекты?", "форма предметов", "Какую фигуру ты видишь?",
                  "Какой формы предметы на рисунке", "Подскажите форму, пожалуйста."],
        "count": [QUESTIONS["ru"]["count"], "Сколько их?", "сколько", "Сколько предметов ты видишь?",
                  "Посчитай фигуры, пожалуйста.", "Количество?", "Сколько тут фигур", "Назовите количество объектов.",
                  "Сколько фигур нарисовано?", "Сколько предметов на картинке?", "Можете посчитать фигуры?",
                  "число фигур", "Сколько всего объектов?", "Сколько предметов на рисунке",
                  "Подскажите, сколько здесь фигур."],
        "describe": ["Опиши изображение.", "Что на картинке?", "опиши", "Что ты видишь?",
                     "Можешь описать эту картинку?",
                     "Что изображено", "Скажи, что показано на изображении.", "Пожалуйста, опишите, что вы видите.",
                     "Что показывает картинка?", "Кратко опиши изображение.", "что это", "Опишите рисунок, пожалуйста.",
                     "Что здесь нарисовано?", "Расскажи, что на картинке", "Опиши, что нарисовано."],
    },
}

HELDOUT_PHRASINGS: Dict[str, Dict[str, List[str]]] = {
    "en": {"colour": ["What colour is it?", "Which colour do the shapes have", "Tell me the color, please.",
                      "what color are the objects in this image?", "In what colour are they drawn?"],
           "shape": ["What shape is it?", "Which shape are the things in the picture?", "tell me the shape please",
                     "What sort of shape do you see here?", "What shape has been drawn?"],
           "count": ["How many shapes can you see?", "what's the number of objects here",
                     "Count the figures in this picture.", "How many are drawn?",
                     "Tell me how many objects there are, please"],
           "describe": ["Describe this image in detail", "What's in the picture?", "What can you see in this image?",
                        "Please tell me what is in the image.", "Briefly, what does this image show?"]},
    "zh": {"colour": ["这个形状是什么颜色？", "图中物体的颜色是什么", "请告诉我颜色。", "这些东西是什么颜色的？", "图里画的是哪种颜色？"],
           "shape": ["这个图形是什么形状？", "图中图形的形状是什么", "请告诉我形状。", "画的是什么形状的东西？", "图里是哪种形状？"],
           "count": ["这张图片里有多少个物体？", "数数有几个", "请问一共有几个形状？", "图里画了多少个图形", "有几个东西？"],
           "describe": ["详细描述这张图片", "这幅图里有什么？", "请告诉我图片里有什么。", "你在图中看到了什么", "简单说说这张图。"]},
    "pt": {"colour": ["Qual é a cor?", "De que cor são os objetos", "Me diz a cor, por favor.",
                      "Que cor têm as formas nesta imagem?", "Qual a cor das figuras desenhadas?"],
           "shape": ["Qual é a forma?", "Que formato têm os objetos", "Me diz a forma, por favor.",
                     "Que forma aparece nesta imagem?", "Qual o formato das figuras desenhadas?"],
           "count": ["Quantas formas você vê?", "Quantos objetos há nesta imagem", "Conte as figuras.",
                     "Qual a quantidade de formas na imagem?", "Quantas são, por favor?"],
           "describe": ["Descreva esta imagem em detalhes", "O que há nesta imagem?",
                        "Me diga o que aparece na figura.",
                        "O que você consegue ver aqui", "Descreva brevemente a imagem, por favor."]},
    "ar": {"colour": ["ما لون هذا الشكل؟", "ما هو اللون؟", "قل لي اللون من فضلك", "بأي لون الأشياء المرسومة؟",
                      "ما لون الأجسام في هذه الصورة"],
           "shape": ["ما شكل هذا؟", "ما هو الشكل؟", "قل لي الشكل من فضلك", "أي شكل هندسي مرسوم هنا؟",
                     "ما شكل الأشياء في هذه الصورة"],
           "count": ["كم شكلاً هنا؟", "ما هو عدد الأشكال في هذه الصورة", "عد الأجسام من فضلك",
                     "كم عدد الأشياء المرسومة؟",
                     "قل لي كم شكلاً ترى"],
           "describe": ["صف هذه الصورة بالتفصيل", "ماذا يوجد في الصورة؟", "ما الذي تراه في هذه الصورة؟",
                        "من فضلك أخبرني بما في الصورة", "باختصار، ماذا تظهر هذه الصورة؟"]},
    "tr": {"colour": ["Bu ne renk?", "Şekiller ne renkte", "Rengi söyle lütfen.", "Bu resimdeki nesnelerin rengi ne?",
                      "Çizilen şekiller hangi renk?"],
           "shape": ["Bu hangi şekil?", "Nesneler ne şekilde", "Şekli söyle lütfen.", "Bu resimde hangi şekil var?",
                     "Çizilen şey hangi şekilde?"],
           "count": ["Kaç şekil var?", "Bu resimde kaç nesne var", "Şekilleri say lütfen.",
                     "Resimde toplam kaç tane cisim var?", "Kaç tane çizilmiş?"],
           "describe": ["Bu resmi ayrıntılı olarak anlat", "Bu resimde ne var?", "Resimde ne gördüğünü söyle.",
                        "Neler görüyorsun burada", "Kısaca, bu resim ne gösteriyor?"]},
    "ru": {"colour": ["Какой это цвет?", "Какого цвета предметы на этой картинке", "Назови цвет, пожалуйста.",
                      "Каким цветом они нарисованы?", "Какой цвет у фигур?"],
           "shape": ["Какая это форма?", "Какой формы предметы на этой картинке", "Назови форму, пожалуйста.",
                     "Что за фигура тут нарисована?", "Какая форма у фигур?"],
           "count": ["Сколько фигур ты видишь?", "Сколько объектов на этой картинке", "Посчитай предметы.",
                     "Какое количество фигур на изображении?", "Сколько всего нарисовано?"],
           "describe": ["Опиши это изображение подробно", "Что на этом рисунке?",
                        "Расскажите, что изображено на картинке.", "Что ты тут видишь",
                        "Коротко: что показано на этой картинке?"]},
}

# The words a description needs beyond WORDS: plurals, genders and agreement.
_EN_PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
_ZH_COUNT = {1: "一", 2: "两", 3: "三", 4: "四"}
_PT_FEMININE = {"star"}
_PT_SHAPE_PLURAL = {"circle": "círculos", "square": "quadrados", "triangle": "triângulos", "star": "estrelas"}
_PT_COUNT = {1: ("um", "uma"), 2: ("dois", "duas"), 3: ("três", "três"), 4: ("quatro", "quatro")}
_PT_COLOUR = {  # masculine singular, feminine singular, masculine plural, feminine plural
    "red": ("vermelho", "vermelha", "vermelhos", "vermelhas"), "green": ("verde", "verde", "verdes", "verdes"),
    "blue": ("azul", "azul", "azuis", "azuis"), "yellow": ("amarelo", "amarela", "amarelos", "amarelas"),
    "purple": ("roxo", "roxa", "roxos", "roxas"), "orange": ("laranja", "laranja", "laranja", "laranja")}
_AR_FEMININE = {"circle", "star"}
_AR_SHAPE = {  # singular, dual, plural
    "circle": ("دائرة", "دائرتان", "دوائر"), "square": ("مربع", "مربعان", "مربعات"),
    "triangle": ("مثلث", "مثلثان", "مثلثات"), "star": ("نجمة", "نجمتان", "نجوم")}
_AR_COLOUR = {  # masculine, feminine (also for non-human plurals), masculine dual, feminine dual
    "red": ("أحمر", "حمراء", "أحمران", "حمراوان"), "green": ("أخضر", "خضراء", "أخضران", "خضراوان"),
    "blue": ("أزرق", "زرقاء", "أزرقان", "زرقاوان"), "yellow": ("أصفر", "صفراء", "أصفران", "صفراوان"),
    "purple": ("بنفسجي", "بنفسجية", "بنفسجيان", "بنفسجيتان"),
    "orange": ("برتقالي", "برتقالية", "برتقاليان", "برتقاليتان")}
_RU_FEMININE = {"star"}
_RU_SHAPE_GENITIVE = {"circle": "круга", "square": "квадрата", "triangle": "треугольника", "star": "звезды"}
_RU_COLOUR = {  # feminine singular, plural nominative (after 2-4 with a feminine noun), plural genitive (masculine)
    "red": ("красная", "красные", "красных"), "green": ("зелёная", "зелёные", "зелёных"),
    "blue": ("синяя", "синие", "синих"), "yellow": ("жёлтая", "жёлтые", "жёлтых"),
    "purple": ("фиолетовая", "фиолетовые", "фиолетовых"), "orange": ("оранжевая", "оранжевые", "оранжевых")}


def describe(lang: str, colour: str, shape: str, count: int) -> str:
    """The short answer to a "describe" request, in ``lang``: "two red circles", "两个红色圆形", "dois círculos
    vermelhos", "دائرتان حمراوان", "iki kırmızı daire", "два красных круга"."""
    w = WORDS[lang]
    if lang == "en":
        return f"{w[count]} {colour} {shape if count == 1 else _EN_PLURAL[shape]}"
    if lang == "zh":
        return f"{_ZH_COUNT[count]}个{w[colour]}{w[shape]}"
    if lang == "pt":
        fem = shape in _PT_FEMININE
        if count == 1:
            return f"{_PT_COUNT[1][fem]} {w[shape]} {_PT_COLOUR[colour][fem]}"
        return f"{_PT_COUNT[count][fem]} {_PT_SHAPE_PLURAL[shape]} {_PT_COLOUR[colour][2 + fem]}"
    if lang == "ar":
        fem = shape in _AR_FEMININE
        single, dual, plural = _AR_SHAPE[shape]
        if count == 1:
            return f"{single} {_AR_COLOUR[colour][fem]} {'واحدة' if fem else 'واحد'}"
        if count == 2:
            return f"{dual} {_AR_COLOUR[colour][2 + fem]}"
        number = {3: ("ثلاثة", "ثلاث"), 4: ("أربعة", "أربع")}[count][fem]  # 3-10 take the opposite gender
        return f"{number} {plural} {_AR_COLOUR[colour][1]}"
    if lang == "tr":
        return f"{w[count]} {w[colour]} {w[shape]}"  # Turkish nouns stay singular after a number
    if lang == "ru":
        fem = shape in _RU_FEMININE
        if count == 1:
            return f"{'одна' if fem else 'один'} {_RU_COLOUR[colour][0] if fem else w[colour]} {w[shape]}"
        number = "две" if count == 2 and fem else w[count]
        return f"{number} {_RU_COLOUR[colour][1 if fem else 2]} {_RU_SHAPE_GENITIVE[shape]}"
    raise ValueError(f"unknown language {lang!r}")


class DemoScene:
    """A picture of ``count`` objects of one shape and colour, plus which question kinds the demo asks: an open
    question in the model's own wording, a multiple-choice one, and one in a wording the model never saw in
    training (``HELDOUT_PHRASINGS``; ``para_kind`` may be "describe")."""

    def __init__(self, shape: str, colour: str, count: int, background: Tuple[int, int, int], open_kind: str,
                 mc_kind: str, options: List[object], para_kind: str):
        self.shape, self.colour, self.count, self.background = shape, colour, count, background
        self.open_kind, self.mc_kind, self.options, self.para_kind = open_kind, mc_kind, options, para_kind

    @property
    def name(self) -> str:
        return f"{self.count} {self.colour} {self.shape}{'s' if self.count > 1 else ''}"

    def truth(self, kind: str) -> object:
        return {"colour": self.colour, "shape": self.shape, "count": self.count}[kind]


SCENES = [
    DemoScene("circle", "red", 2, (245, 245, 245), "colour", "count", [3, 2, 4, 1], "describe"),
    DemoScene("square", "blue", 1, (215, 230, 245), "shape", "colour", ["green", "yellow", "blue", "red"], "count"),
    DemoScene("triangle", "green", 3, (60, 60, 60), "count", "shape", ["triangle", "star", "circle", "square"],
              "colour"),
    DemoScene("star", "orange", 4, (235, 225, 200), "shape", "colour", ["purple", "orange", "red"], "describe"),
]


def _polygon_mask(xs: np.ndarray, ys: np.ndarray, pts: List[Tuple[float, float]]) -> np.ndarray:
    """Pixels whose centres lie inside the polygon (even-odd rule)."""
    inside = np.zeros(xs.shape, bool)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
        crosses = (y0 > ys) != (y1 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < xint)
    return inside


def draw_scene(scene: DemoScene, width: int = 96, height: int = 84) -> np.ndarray:
    """H×W×3 uint8: the scene's objects at fixed, non-overlapping places (the sizes the model was trained on)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    img = np.empty((height, width, 3), np.uint8)
    img[:] = scene.background
    side = min(width, height)
    r = side * (0.14 if scene.count > 2 else 0.18)
    spots = {1: [(0.5, 0.5)], 2: [(0.28, 0.35), (0.7, 0.65)], 3: [(0.25, 0.3), (0.72, 0.3), (0.5, 0.72)],
             4: [(0.27, 0.28), (0.73, 0.28), (0.27, 0.72), (0.73, 0.72)]}[scene.count]
    for k, (fx, fy) in enumerate(spots):
        cx, cy = fx * width, fy * height
        if scene.shape == "circle":
            mask = (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r
        elif scene.shape == "square":
            mask = (np.abs(xs - cx) <= r * 0.85) & (np.abs(ys - cy) <= r * 0.85)
        elif scene.shape == "triangle":
            a = -math.pi / 2 + 0.3 * k
            mask = _polygon_mask(xs, ys, [(cx + r * math.cos(a + j * 2 * math.pi / 3),
                                           cy + r * math.sin(a + j * 2 * math.pi / 3)) for j in range(3)])
        else:
            a = -math.pi / 2 + 0.2 * k
            mask = _polygon_mask(xs, ys, [(cx + (r if j % 2 == 0 else r * 0.45) * math.cos(a + j * math.pi / 5),
                                           cy + (r if j % 2 == 0 else r * 0.45) * math.sin(a + j * math.pi / 5))
                                          for j in range(10)])
        img[mask] = COLOUR_RGB[scene.colour]
    return img


def mc_prompt(question: str, options: List[str], lang: str) -> str:
    """The MMMB multiple-choice prompt (docs/model.md §11): question, ``\nA. option`` lines, ``\n`` + the instruction."""
    from parrot.evaluation.prompts import EN_INSTRUCTION, INSTRUCTIONS
    text = question + "".join(f"\n{letter}. {o}" for letter, o in zip("ABCD", options))
    return text + "\n" + INSTRUCTIONS.get(lang, EN_INSTRUCTION)


# ---- a random model without torch
def _write_safetensors(path: str, tensors: Dict[str, np.ndarray]) -> None:
    header: Dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype=np.float32).tobytes())


def _byte_level_tokenizer(d: str) -> int:
    """A Qwen2-style tokenizer.json with one token per byte and no merges; returns the vocabulary size."""
    from parrot._tokenizer_data import BYTE_ALPHABET, QWEN2_PRE_REGEX

    vocab = {BYTE_ALPHABET[b]: b for b in range(256)}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = [{"id": 256 + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(specials)]
    tj: Dict[str, Any] = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PRE_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
                   "tokenizer_class": "Qwen2Tokenizer"}, f)
    return 256 + len(specials)


def make_random_model(out_path: str, *, seed: int = 0) -> str:
    """Writes a small random Parrot GGUF (random weights, byte-level tokenizer) to out_path; no torch."""
    from parrot.converter import convert

    with tempfile.TemporaryDirectory(prefix="parrot-demo-") as d:
        write_random_checkpoint(d, seed=seed)
        return convert(d, out_path, dtype="f32", force=True, progress=False, log=lambda s: None)


def write_random_checkpoint(d: str, *, seed: int = 0, hidden: int = 64, layers: int = 2, image_size: int = 56,
                            patch: int = 14, experts: int = 6) -> str:
    """Writes a small random Hugging Face Parrot checkpoint (config.json, model.safetensors, a byte-level
    tokenizer) into directory d with numpy alone; returns d."""
    rng = np.random.default_rng(seed)
    vd, vff, vL, vH, ff, moe_ff = 48, 96, 3, 4, 128, 96
    n_pos = (image_size // patch) ** 2 + 1
    os.makedirs(d, exist_ok=True)
    V = _byte_level_tokenizer(d)

    def mat(*shape: int) -> np.ndarray:
        return rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape).astype(np.float32)

    def vec(n: int, centre: float = 0.0, scale: float = 0.1) -> np.ndarray:
        return (centre + scale * rng.normal(0, 1, n)).astype(np.float32)

    kv = hidden // 4 * 2
    t: Dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.normal(0, 0.5, (V, hidden)).astype(np.float32),
        "model.norm.weight": vec(hidden, 1.0), "lm_head.weight": mat(V, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": vec(hidden, 1.0), p + "post_attention_layernorm.weight":
                  vec(hidden, 1.0), p + "self_attn.q_proj.weight": mat(hidden, hidden),
                  p + "self_attn.q_proj.bias": vec(hidden), p + "self_attn.k_proj.weight": mat(kv, hidden),
                  p + "self_attn.k_proj.bias": vec(kv), p + "self_attn.v_proj.weight": mat(kv, hidden),
                  p + "self_attn.v_proj.bias": vec(kv), p + "self_attn.o_proj.weight": mat(hidden, hidden),
                  p + "mlp.gate_proj.weight": mat(ff, hidden), p + "mlp.up_proj.weight": mat(ff, hidden),
                  p + "mlp.down_proj.weight": mat(hidden, ff)})
    v = "model.vision_tower.vision_tower.vision_model."
    t.update({v + "embeddings.class_embedding": vec(vd, 0.0, 0.5),
              v + "embeddings.patch_embedding.weight": mat(vd, 3, patch, patch),
              v + "embeddings.position_embedding.weight": rng.normal(0, 0.5, (n_pos, vd)).astype(np.float32),
              v + "pre_layrnorm.weight": vec(vd, 1.0), v + "pre_layrnorm.bias": vec(vd)})
    for i in range(vL):
        q = f"{v}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[q + f"self_attn.{name}.weight"] = mat(vd, vd)
            t[q + f"self_attn.{name}.bias"] = vec(vd)
        for name in ("layer_norm1", "layer_norm2"):
            t[q + f"{name}.weight"] = vec(vd, 1.0)
            t[q + f"{name}.bias"] = vec(vd)
        t.update({q + "mlp.fc1.weight": mat(vff, vd), q + "mlp.fc1.bias": vec(vff),
                  q + "mlp.fc2.weight": mat(vd, vff), q + "mlp.fc2.bias": vec(vd)})
    t.update({"model.mm_projector.0.weight": mat(hidden, vd), "model.mm_projector.0.bias": vec(hidden),
              "model.mm_projector.2.weight": mat(hidden, hidden), "model.mm_projector.2.bias": vec(hidden),
              "model.moe_model.gate.weight": mat(experts, hidden)})
    for e in range(experts):
        q = f"model.moe_model.experts.{e}."
        t.update({q + "gate_proj.weight": mat(moe_ff, hidden), q + "up_proj.weight": mat(moe_ff, hidden),
                  q + "down_proj.weight": mat(hidden, moe_ff)})
    _write_safetensors(os.path.join(d, "model.safetensors"), t)
    config = {
        "architectures": ["ParrotQwen2ForCausalLM"], "model_type": "parrot_qwen2", "vocab_size": V,
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": False,
        "mm_vision_tower": "random/clip-vit-demo", "mm_hidden_size": vd, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "cls_patch", "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "pad", "num_experts": experts, "moe_hidden_size": hidden,
        "moe_intermediate_size": moe_ff, "use_moe": True, "use_moe_residual": True, "moe_weight": 0.1,
        "vision_config": {"hidden_size": vd, "intermediate_size": vff, "num_hidden_layers": vL,
                          "num_attention_heads": vH, "patch_size": patch, "image_size": image_size,
                          "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return d


def _bars(w: Optional[np.ndarray], width: int = 8) -> str:
    if w is None:
        return ""
    blocks = " ▁▂▃▄▅▆▇█"
    top = float(max(w.max(), 1e-9))
    return "".join(blocks[int(round(float(x) / top * width))] for x in w) + "  " + \
        " ".join(f"{float(x):.2f}" for x in w)


def default_or_random_model(out: IO[str] = sys.stdout) -> "Tuple[object, bool]":
    """``(model, is_random)``: the default model, else a random one built in a temporary directory (with a
    notice on ``out``)."""
    import parrot
    from parrot.errors import ModelError

    try:
        return parrot.default_model(), False
    except ModelError:
        pass
    print("No trained model is installed (no $PARROT_MODEL, none shipped in the package).\n"
          "Building a small RANDOM Parrot to show the pipeline: its answers are meaningless noise.\n", file=out)
    d = tempfile.mkdtemp(prefix="parrot-demo-")
    path = make_random_model(os.path.join(d, "random-parrot.gguf"))
    model = parrot.load(path)
    os.unlink(path)  # the file stays mapped; nothing is left behind
    os.rmdir(d)
    return model, True


def run(model: "object" = None, *, max_new_tokens: int = 24, paraphrases: bool = False,
        out: IO[str] = sys.stdout) -> int:
    """Runs the demo on ``model`` (default: the default model, else a random one built on the spot). With
    ``paraphrases``, each picture is also asked one of ``HELDOUT_PHRASINGS`` per language."""
    random_model = False
    t_start = time.perf_counter()
    if model is None:
        model, random_model = default_or_random_model(out)
    print(f"model: {model}\n", file=out)
    if paraphrases:
        print("--paraphrases: every picture is also asked in a wording the shipped model was NOT trained on (it\n"
              "learnt one wording per question kind and language); expect many wrong answers to these.\n", file=out)
    forms = ("open", "multiple choice", "paraphrased") if paraphrases else ("open", "multiple choice")
    right = {form: 0 for form in forms}
    asked = {form: 0 for form in forms}
    for s, scene in enumerate(SCENES):
        img = draw_scene(scene)
        print(f"== {scene.name}", file=out)
        for n, lang in enumerate(LANGS):
            words = WORDS[lang]
            options = [words[o] for o in scene.options]
            wordings = HELDOUT_PHRASINGS[lang][scene.para_kind]
            para_want = (describe(lang, scene.colour, scene.shape, scene.count) if scene.para_kind == "describe"
                         else words[scene.truth(scene.para_kind)])
            asks = [("open", QUESTIONS[lang][scene.open_kind], words[scene.truth(scene.open_kind)]),
                    ("multiple choice", mc_prompt(QUESTIONS[lang][scene.mc_kind], options, lang),
                     "ABCD"[scene.options.index(scene.truth(scene.mc_kind))]),
                    ("paraphrased", wordings[(s + n) % len(wordings)], para_want)]
            for form, prompt, want in asks[:len(forms)]:
                t0 = time.perf_counter()
                r = model.run(img, prompt, max_new_tokens=max_new_tokens)  # type: ignore[attr-defined]
                dt = time.perf_counter() - t0
                answer = r.text.replace("\n", " ")
                if random_model:
                    # noise bytes: show printable characters only
                    answer = "".join(c if c.isprintable() and c != "\ufffd" else "·" for c in answer)[:48]
                asked[form] += 1
                right[form] += answer == want
                shown = prompt.replace("\n", " | ") + ("   (a wording not trained on)" if form == "paraphrased" else "")
                print(f"  [{lang}] {shown}\n       → {answer}{'' if answer == want else f'   (expected {want})'}"
                      f"\n       routing {_bars(r.routing)}   ({dt * 1000:.1f} ms"
                      f"{', image cached' if r.image_cache_hit else ''})", file=out)
        print(file=out)
    info = model.image_cache_info()  # type: ignore[attr-defined]
    print("answers as expected: " + ", ".join(f"{right[f]}/{asked[f]} {f}" for f in forms) +
          f"; {time.perf_counter() - t_start:.2f} s in all", file=out)
    print(f"image-feature cache: {info.hits} hits, {info.misses} misses, "
          f"{info.seconds_saved * 1000:.0f} ms of vision + expert work saved", file=out)
    if random_model:
        print("\n(random weights: the answers above mean nothing; they show the pipeline works.)", file=out)
    return 0
